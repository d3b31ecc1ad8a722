"""`imagelabel eval`: the run pipeline over a labeled manifest, scored; bad labels caught first."""
import json
import pathlib

import pytest

from conftest import read_parquet_rows, run_cli
from reference import reference_accuracy

EXIT_USAGE = 2



def _eval_json(output) -> str:
    """The one eval.json, beside summary.json in the date's partition."""
    found = list(pathlib.Path(output).glob('run_date=*/eval.json'))
    assert len(found) == 1 and (found[0].parent / 'summary.json').exists(), found
    return found[0].read_text()

def test_eval_on_the_imagenet_sample_matches_the_reference_within_two_points(
        assets, mobilenet_v2_quant, tmp_path):
    # The plain recipe here; `models --eval` checks the crop recipe of the same model.
    ref1, ref5 = reference_accuracy(assets)[(mobilenet_v2_quant.name, 'plain')]
    r = run_cli('eval', '--input', assets / 'imagenet_sample' / 'manifest.csv',
                '--output', tmp_path, '--model', mobilenet_v2_quant, '--resize', 'plain')
    assert r.code == 0, r.err
    report = json.loads(_eval_json(tmp_path))
    assert (report['count'], report['labeled'], report['errors']) == (1000, 1000, 0)
    assert abs(report['top1'] - ref1) <= 0.02 and abs(report['top5'] - ref5) <= 0.02, report
    assert report['top1_all'] == report['top1'] and report['resize'] == 'plain'
    # The figures are the labels table's, joined on uri.
    rows = read_parquet_rows(tmp_path, 'labels')
    assert len(rows) == 1000
    hits = sum(c['correct'] for c in report['per_class'])
    assert hits == round(report['top1'] * 1000)
    assert len(report['per_class']) == 1000 and len(report['confusions']) == 20
    counts = [c['count'] for c in report['confusions']]
    assert counts == sorted(counts, reverse=True)
    assert all(c['true_index'] != c['predicted_index'] for c in report['confusions'])
    # The printed table shows the same figures.
    assert f'{100 * report["top1"]:.1f}%' in r.out and f'{100 * report["top5"]:.1f}%' in r.out


def test_failed_images_count_as_wrong_only_in_the_all_figures(
        mobilenet_v2_quant, grace_hopper, panda, tmp_path):
    (tmp_path / 'broken.jpg').write_bytes(b'\xff\xd8\xff\xe0 not really a jpeg')
    manifest = tmp_path / 'labeled.csv'
    manifest.write_text('uri,label\n'
                        f'{grace_hopper},military uniform\n'
                        f'{panda},giant panda\n'
                        'broken.jpg,giant panda\n'       # relative to the manifest's folder
                        'missing.jpg,tabby\n'
                        f'{panda},giant panda\n')        # listed twice, labeled once
    r = run_cli('eval', '--input', manifest, '--output', tmp_path / 'out',
                '--model', mobilenet_v2_quant, '--resize', 'plain')
    assert r.code == 0, r.err
    report = json.loads(_eval_json(tmp_path / 'out'))
    assert (report['count'], report['labeled'], report['errors']) == (4, 2, 2)
    assert report['top1'] == 1.0 and report['top5'] == 1.0
    assert report['top1_all'] == 0.5 and report['top5_all'] == 0.5
    errors = read_parquet_rows(tmp_path / 'out', 'errors')
    stages = {e['uri'].rsplit('/', 1)[-1]: (e['stage'], e['error']) for e in errors}
    assert stages['missing.jpg'] == ('read', 'not_found')
    assert stages['broken.jpg'][0] == 'decode' and len(stages) == 2


@pytest.mark.parametrize('rows, message', [
    ('uri,label_index\na.jpg,3\nb.jpg,\n', 'line 3: '),
    ('uri,label_index\na.jpg,3\nb.jpg,three\n', "line 3: label_index 'three' is not an integer"),
    ('uri,label_index\na.jpg,1000\n', 'line 2: label_index 1000 is outside 0..999'),
    ('uri,label\na.jpg,tabby\nb.jpg,not a class\n', "line 3: label 'not a class' is not one"),
    ('uri,label_index\na.jpg,3\na.jpg,4\n', 'line 3: '),
    ('uri,wnid\na.jpg,n01440764\n', 'no label_index or label column'),
])
def test_a_manifest_row_without_a_usable_label_fails_before_the_job_naming_the_line(
        rows, message, mobilenet_v2_quant, tmp_path):
    manifest = tmp_path / 'bad.csv'
    manifest.write_text(rows)
    r = run_cli('eval', '--input', manifest, '--output', tmp_path / 'out',
                '--model', mobilenet_v2_quant)
    assert r.code == EXIT_USAGE
    assert r.err.strip().count('\n') == 0 and message in r.err, r.err
    assert not (tmp_path / 'out').exists()  # nothing ran


def test_eval_needs_a_local_csv_manifest_an_output_and_five_labels(mobilenet_v2_quant, panda,
                                                                  tmp_path):
    r = run_cli('eval', '--input', panda, '--output', tmp_path, '--model', mobilenet_v2_quant)
    assert r.code == EXIT_USAGE and 'CSV manifest' in r.err
    manifest = tmp_path / 'm.csv'
    manifest.write_text(f'uri,label_index\n{panda},388\n')
    r = run_cli('eval', '--input', manifest, '--model', mobilenet_v2_quant)
    assert r.code == EXIT_USAGE and '--output is required' in r.err
    r = run_cli('eval', '--input', manifest, '--output', tmp_path / 'o', '--top_k', '3',
                '--model', mobilenet_v2_quant)
    assert r.code == EXIT_USAGE and '--top_k 5' in r.err
    r = run_cli('eval', '--input', manifest, '--output', 'gs://bucket/eval', '--model',
                mobilenet_v2_quant, '--runner', 'DataflowRunner')
    assert r.code == EXIT_USAGE and 'local runner' in r.err
    r = run_cli('eval', '--input', manifest, '--output', tmp_path / 'd', '--model',
                mobilenet_v2_quant, '--dry_run', 'true')  # once an AttributeError traceback
    assert r.code == EXIT_USAGE and 'imagelabel run --dry_run' in r.err
    r = run_cli('eval', '--input', manifest, '--output', tmp_path / 'd', '--model',
                mobilenet_v2_quant, '--dry_run')  # bare, as `run` takes it
    assert r.code == EXIT_USAGE and 'imagelabel run --dry_run' in r.err, r.err
    assert not (tmp_path / 'd').exists()


def test_eval_help_shows_the_run_flags_with_defaults():
    r = run_cli('eval', '--help')
    assert r.code == 0 and 'imagelabel eval' in r.out and '--head' in r.out
    assert 'label_index' in r.out and '(default: crop)' in r.out


def test_an_eval_refused_for_its_manifest_keeps_the_dates_earlier_output(mobilenet_v2_quant,
                                                                          panda, tmp_path):
    manifest = tmp_path / 'm.csv'
    manifest.write_text(f'uri,label_index\n{panda},388\n')
    date = ['--run_date', '2026-11-20', '--model', mobilenet_v2_quant]
    first = run_cli('eval', '--input', manifest, '--output', tmp_path / 'out', *date)
    assert first.code == 0, first.err
    partition = tmp_path / 'out' / 'run_date=2026-11-20'
    before = sorted(p.name for p in partition.iterdir())
    manifest.write_text(f'uri,label_index\n{panda},5000\n')  # now refused, after the load
    again = run_cli('eval', '--input', manifest, '--output', tmp_path / 'out', *date)
    assert again.code == EXIT_USAGE and 'outside 0..999' in again.err, again.err
    assert sorted(p.name for p in partition.iterdir()) == before
    assert 'summary.json' in before and any(n.startswith('labels-') for n in before)


def test_an_eval_manifest_that_is_a_folder_is_one_line(mobilenet_v2_quant, tmp_path):
    (tmp_path / 'truth.csv').mkdir()
    r = run_cli('eval', '--input', tmp_path / 'truth.csv', '--output', tmp_path / 'out',
                '--model', mobilenet_v2_quant)
    assert r.code == EXIT_USAGE and 'cannot be read: IsADirectoryError' in r.err, r.err
    assert r.err.strip().count('\n') == 0
