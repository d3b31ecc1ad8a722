"""The Flex Template: metadata.json is the flags, the launcher entry point dry-runs them,
and the Dockerfile, the lock and the installed Beam agree."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT, run_cli, write_jpeg
from pipeline.run import parser as run_parser
from pipeline.template_metadata import metadata, render, template_argv

TEMPLATES = ROOT / 'templates'
CHECKED_IN = json.loads((TEMPLATES / 'metadata.json').read_text())
PARAMS = {p['name']: p for p in CHECKED_IN['parameters']}


def test_the_checked_in_metadata_is_what_the_options_generate():
    assert (TEMPLATES / 'metadata.json').read_text() == render(), \
        'templates/metadata.json is stale: run `make metadata`'


def test_every_launcher_flag_is_one_parameter_and_every_parameter_a_flag():
    flags = [a.option_strings[0].removeprefix('--') for a in run_parser()._actions
             if a.option_strings and a.option_strings[0] != '-h']
    names = [p['name'] for p in CHECKED_IN['parameters']]
    assert len(names) == len(set(names))
    assert sorted(names) == sorted(flags)


def test_every_parameter_has_help_a_label_and_a_regex():
    for p in CHECKED_IN['parameters']:
        assert p['helpText'] and p['label'] and p['regexes'], p['name']
        for regex in p['regexes']:
            re.compile(regex)


def test_only_input_is_required():
    assert [p['name'] for p in CHECKED_IN['parameters'] if not p['isOptional']] == ['input']


def example_values() -> dict[str, str]:
    """Each parameter's default, or its example where it has no default."""
    return {name: p.get('defaultValue', p.get('customMetadata', {}).get('example'))
            for name, p in PARAMS.items()
            if 'defaultValue' in p or 'example' in p.get('customMetadata', {})}


def test_every_default_and_example_passes_its_own_regexes():
    values = example_values()
    assert {'input', 'output', 'model', 'top_k', 'skip_existing', 'dry_run'} <= values.keys()
    for name, value in values.items():
        for regex in PARAMS[name]['regexes']:
            assert re.fullmatch(regex, value), (name, value, regex)


@pytest.mark.parametrize('name, bad', [
    ('top_k', 'five'), ('top_k', '-1'), ('resize', 'stretch'), ('precision', 'fp16'),
    ('skip_existing', 'yes'), ('dry_run', 'maybe'), ('input', '/home/me/photos'),
    ('output', 'labels/'), ('model', 'inception'), ('model', 'my_model.keras'),
    ('run_date', '23-11-2026'), ('max_pixels', '1e6'),
])
def test_the_regexes_refuse_what_the_launcher_would_refuse(name, bad):
    assert not any(re.fullmatch(r, bad) for r in PARAMS[name]['regexes'])


def test_the_launchers_booleans_become_flags_argparse_takes():
    assert template_argv(['--skip_existing=true', '--share_model=false', '--top_k=3',
                          '--dry_run=true', '--skip_existing']) == [
        '--skip_existing', '--top_k=3', '--dry_run=true', '--skip_existing']


def test_metadata_generation_is_deterministic():
    assert metadata() == metadata()


def test_the_entry_point_dry_runs_the_metadata_parameters(tmp_path, tiny_keras_model):
    """What the Flex Template launcher does, with local stand-ins for the gs:// examples."""
    for i in range(3):
        write_jpeg(tmp_path / 'photos' / f'{i}.jpg', seed=i)
    values = example_values()
    # Offline: gs:// examples become local paths, and a tiny model stands in for the named
    # one (whose weights Keras would download); --weights and --labels_file go with it.
    values.update(input=str(tmp_path / 'photos'), output=str(tmp_path / 'out'),
                  model=str(tiny_keras_model), dry_run='true')
    for name in ('weights', 'labels_file'):
        values.pop(name)
    argv = [f'--{name}={value}' for name, value in values.items()]
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'TF_CPP_MIN_LOG_LEVEL': '2'}
    r = subprocess.run([sys.executable, str(TEMPLATES / 'main.py'), *argv], cwd=tmp_path,
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert re.search(r'dry run: the job graph \(\d+ steps\) was built and validated', r.stderr)
    assert not (tmp_path / 'out').exists()  # nothing written, not even the folder


def test_a_bad_parameter_fails_the_launch_with_one_line(tmp_path):
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'TF_CPP_MIN_LOG_LEVEL': '2'}
    r = subprocess.run([sys.executable, str(TEMPLATES / 'main.py'), '--input=photos',
                        '--output=out', '--dry_run=true', '--top_k=0'], cwd=tmp_path,
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == (
        'imagelabel: error: --top_k must be a positive integer, got 0')


def lock() -> dict[str, str]:
    pins = {}
    for line in (TEMPLATES / 'requirements.lock').read_text().splitlines():
        if line and not line.startswith('#'):
            name, _, version = line.partition('==')
            pins[name] = version
    return pins


def test_the_launcher_and_the_workers_run_the_beam_and_python_the_lock_pins():
    dockerfile = (TEMPLATES / 'Dockerfile').read_text()
    beam = lock()['apache-beam']
    assert f'ARG BEAM_VERSION={beam}\n' in dockerfile
    py = '3.11'  # the lock's comment says which Python it was made with
    assert f'# Python {py}, linux.' in (TEMPLATES / 'requirements.lock').read_text()
    assert f'FROM apache/beam_python{py}_sdk:${{BEAM_VERSION}}' in dockerfile
    assert f'python{py.replace(".", "")}-template-launcher-base' in dockerfile


def test_the_lock_pins_every_runtime_dependency_and_no_test_tool():
    import tomllib
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    project = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']
    pins = lock()
    for dep in project['dependencies']:
        assert canonicalize_name(Requirement(dep).name) in pins, dep
    for tool in ('pytest', 'hypothesis', 'duckdb', 'build'):
        assert tool not in pins


def test_the_dockerfile_copies_files_that_exist_and_runs_the_thin_main():
    dockerfile = (TEMPLATES / 'Dockerfile').read_text()
    for line in dockerfile.splitlines():
        if line.startswith('COPY ') and '--from=' not in line:
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), src
    assert 'ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/template/main.py' in dockerfile
    assert 'COPY templates/main.py /template/main.py' in dockerfile


def test_a_bare_dry_run_builds_the_graph_and_leaves_an_earlier_run_alone(tmp_path,
                                                                        tiny_keras_model):
    write_jpeg(tmp_path / 'photos' / 'a.jpg')
    common = ['run', '--input', tmp_path / 'photos', '--output', tmp_path / 'out',
              '--model', tiny_keras_model]
    first = run_cli(*common)
    assert first.code == 0, first.err
    before = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / 'out').rglob('*'))
    # Same date: a real run would replace this partition; a dry run touches nothing.
    dry = run_cli(*common, '--skip_existing', '--dry_run')
    assert dry.code == 0, dry.err
    assert dry.out == ''  # no summary: nothing ran
    assert sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / 'out').rglob('*')) == before
    assert any(p.endswith('/labels-00000-of-00001.parquet') for p in before)


def test_dry_run_false_runs_the_job(tmp_path, tiny_keras_model):
    write_jpeg(tmp_path / 'photos' / 'a.jpg')
    r = run_cli('run', '--input', tmp_path / 'photos', '--output', tmp_path / 'out',
                '--model', tiny_keras_model, '--dry_run=false')
    assert r.code == 0, r.err
    assert len(list((tmp_path / 'out').glob('run_date=*/summary.json'))) == 1
