"""Bad flags: one clear `imagelabel: error: ...` line, exit code 2, no traceback, no work done.

And a re-run of a date replaces that date's partition only, never another date's, and
only once its own files are written: a re-run that fails leaves the date as it was.
"""
from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

import pytest
from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.localfilesystem import LocalFileSystem

from conftest import ROOT, read_parquet_rows, run_cli, write_jpeg

EXIT_USAGE = 2


class RefusingFileSystem(LocalFileSystem):
    """An object store (`refusing://`) that answers every listing with 403 Forbidden."""

    @classmethod
    def scheme(cls):
        return 'refusing'

    def exists(self, path):
        return False

    def match(self, patterns, limits=None):
        raise BeamIOError('Match operation failed',
                          {p: PermissionError(f'403 Forbidden: list {p}') for p in patterns})


@pytest.fixture(scope='module')
def inputs(tmp_path_factory, tiny_keras_model):
    root = tmp_path_factory.mktemp('flags')
    shutil.copy(tiny_keras_model, root / 'tiny.keras')
    images = root / 'images'
    for i in range(3):
        write_jpeg(images / f'img_{i}.jpg', seed=i)
    (root / 'empty_dir').mkdir()
    (root / 'not_a_dir').write_text('a file where a directory should be\n')
    (root / 'no_uri_column.csv').write_text('path,label\n' + str(images / 'img_0.jpg') + ',x\n')
    (root / 'comments_only.txt').write_text('# nothing here\n\n')
    (root / 'manifest_dir.txt').mkdir()
    (root / 'binary.txt').write_bytes(b'\xff\xfe\x00\x81 not text')
    (root / 'broken.tflite').write_bytes(b'this is not a flatbuffer')
    return root


def _expect_usage_error(result, *phrases: str) -> str:
    assert result.code == EXIT_USAGE, (result.code, result.out, result.err)
    assert 'Traceback' not in result.err and 'Traceback' not in result.out
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    (line,) = lines
    assert line.startswith('imagelabel: error: '), line
    for phrase in phrases:
        assert phrase in line, line
    assert result.out == ''
    return line


# (name, flags replacing or adding to the good ones, phrases the error line must contain)
BAD_FLAGS = [
    ('top_k_zero', {'--top_k': '0'}, ['--top_k must be a positive integer, got 0']),
    ('top_k_negative', {'--top_k': '-3'}, ['--top_k must be a positive integer, got -3']),
    ('top_k_not_a_number', {'--top_k': 'five'}, ['--top_k', "invalid int value: 'five'"]),
    ('top_k_over_classes', {'--top_k': '1001'}, ['--top_k 1001 is more than', '1000 classes']),
    ('unknown_model_name', {'--model': 'resnet9000'},
     ["--model 'resnet9000' is neither a known model", 'inception_v3']),
    ('model_file_missing', {'--model': '{root}/no_such_model.tflite'},
     ['no_such_model.tflite does not exist']),
    ('model_file_broken', {'--model': '{root}/broken.tflite'},
     ['broken.tflite is not a loadable TFLite model']),
    ('output_not_writable', {'--output': '{root}/not_a_dir/out'}, ['is not writable']),
    ('input_glob_matches_nothing', {'--input': '{root}/images/*.png'}, ['matches no file']),
    ('input_empty_directory', {'--input': '{root}/empty_dir'}, ['matches no file']),
    ('input_missing_directory', {'--input': '{root}/no_such_dir'}, ['matches no file']),
    ('input_missing_manifest', {'--input': '{root}/no_such_manifest.txt'},
     ['manifest', 'does not exist']),
    ('input_manifest_lists_nothing', {'--input': '{root}/comments_only.txt'}, ['lists no URI']),
    ('input_manifest_is_a_directory', {'--input': '{root}/manifest_dir.txt'},
     ['cannot be read', 'IsADirectoryError']),
    ('input_manifest_not_text', {'--input': '{root}/binary.txt'},
     ['binary.txt is not UTF-8 text', 'it begins']),
    ('input_store_refuses_listing', {'--input': 'refusing://bucket/photos/'},
     ['cannot be read', '403 Forbidden']),
    ('run_id_with_a_slash', {'--run_id': 'a/b'}, ["--run_id 'a/b' may hold only letters"]),
    ('run_id_climbing_out', {'--run_id': '../x'}, ["--run_id '../x' may hold only"]),
    ('interpreters_on_tensorflow', {'--model': '{root}/tiny.keras', '--interpreters': '2'},
     ['--interpreters applies to LiteRT', 'runs on TensorFlow']),
    ('model_cache_is_a_file', {'--model_cache': '{root}/not_a_dir'}, ['is a file']),
    ('labels_file_is_a_folder', {'--labels': '{root}/empty_dir'},
     ['--labels file', 'cannot be read', 'IsADirectoryError']),
    ('output_inside_the_input_folder', {'--output': '{root}/images/labels'},
     ['--output', 'is inside --input', 'the next run would list its files as images']),
    ('output_matched_by_a_recursive_glob', {'--input': '{root}/images/**',
                                            '--output': '{root}/images/labels'},
     ['is inside --input', 'names only images']),
    ('output_with_pattern_characters', {'--output': '{root}/out [1]'},
     ['holds [', 'read as a pattern']),
    ('csv_manifest_without_uri_column', {'--input': '{root}/no_uri_column.csv'},
     ['no "uri" column', 'path', 'label']),
    ('batch_size_zero', {'--batch_size': '0'}, ['--batch_size must be a positive integer']),
    ('max_pixels_negative', {'--max_pixels': '-1'}, ['--max_pixels must be a positive integer']),
    ('read_retries_zero', {'--read_retries': '0'}, ['--read_retries must be a positive integer']),
    ('resize_unknown', {'--resize': 'squash'}, ['--resize', "invalid choice: 'squash'"]),
    ('misspelt_flag', {'--topk': '3'}, ['unknown flag --topk']),
    ('abbreviated_flag', {'--batch': '8'}, ['unknown flag --batch']),
    ('bf16_for_tflite', {'--precision': 'bf16'}, ['--precision bf16 applies to Keras models']),
    ('decode_threads_zero', {'--decode_threads': '0'}, ['--decode_threads must be a positive']),
    ('local_paths_on_a_remote_runner', {'--runner': 'DataflowRunner'},
     ['is a local path, which workers on a remote runner cannot read']),
    ('missing_input', {'--input': None}, ['--input is required']),
    ('missing_output', {'--output': None}, ['nowhere to write: give --output']),
    ('labels_file_missing', {'--labels': '{root}/no_labels.txt'},
     ['--labels file', 'does not exist']),
]


def _args(root: pathlib.Path, model, changes: dict) -> list[str]:
    flags = {'--input': str(root / 'images'), '--output': str(root / 'out'),
             '--model': str(model)}
    for flag, value in changes.items():
        flags[flag] = value.format(root=root) if value is not None else None
    return [part for flag, value in flags.items() if value is not None
            for part in (flag, value)]


@pytest.mark.parametrize('name, changes, phrases', BAD_FLAGS, ids=[b[0] for b in BAD_FLAGS])
def test_bad_flag_is_one_clear_line(inputs, mobilenet_v2_quant, name, changes, phrases):
    result = run_cli('run', *_args(inputs, mobilenet_v2_quant, changes))
    _expect_usage_error(result, *phrases)
    # Refused before any work: the good output directory was not even created.
    assert not (inputs / 'out').exists()


@pytest.mark.parametrize('changes, phrase', [
    ({'--top_k': '0'}, '--top_k must be a positive integer'),
    ({'--input': '{root}/no_uri_column.csv'}, 'no "uri" column'),
    ({'--input': '{root}/empty_dir'}, 'matches no file'),
])
def test_bad_flag_in_a_real_process(inputs, mobilenet_v2_quant, changes, phrase):
    """The same through the real entry point: exit status and the process's own stderr."""
    proc = subprocess.run(
        [sys.executable, '-m', 'pipeline.cli', 'run', *_args(inputs, mobilenet_v2_quant, changes)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == EXIT_USAGE, proc.stderr
    assert 'Traceback' not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith('imagelabel: error: ')]
    assert len(errors) == 1 and phrase in errors[0], proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == errors[0]
    assert proc.stdout == ''


def test_rerunning_a_date_replaces_that_partition_and_leaves_other_dates_alone(
        inputs, tmp_path, mobilenet_v2_quant):
    out = tmp_path / 'out'
    first = run_cli('run', '--input', inputs / 'images', '--output', out,
                    '--model', mobilenet_v2_quant, '--run_id', 'first', '--run_date', '2026-01-01')
    assert first.code == 0, first.err
    other = run_cli('run', '--input', inputs / 'images', '--output', out, '--model',
                    mobilenet_v2_quant, '--run_id', 'other', '--run_date', '2026-01-02')
    assert other.code == 0, other.err
    day2 = sorted(p.name for p in (out / 'run_date=2026-01-02').iterdir())

    # The same date again, over less input: its partition holds only the new run's rows.
    one_image = tmp_path / 'one.txt'
    one_image.write_text(str(inputs / 'images' / 'img_1.jpg') + '\n')
    replaced = run_cli('run', '--input', one_image, '--output', out, '--model',
                       mobilenet_v2_quant, '--run_id', 'third', '--run_date', '2026-01-01')
    assert replaced.code == 0, replaced.err
    rows = read_parquet_rows(out / 'run_date=2026-01-01', 'labels')
    assert [(r['uri'], r['run_id']) for r in rows] == [(str(inputs / 'images' / 'img_1.jpg'),
                                                        'third')]
    assert read_parquet_rows(out / 'run_date=2026-01-01', 'errors') == []
    assert sorted(p.name for p in (out / 'run_date=2026-01-02').iterdir()) == day2
    assert {r['run_id'] for r in read_parquet_rows(out / 'run_date=2026-01-02', 'labels')} == {
        'other'}


def _disk_full_while_writing(monkeypatch):
    import pyarrow.parquet as pq

    def disk_full(self, table, *args, **kwargs):
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(pq.ParquetWriter, 'write_table', disk_full)


def _worker_lost_once_both_tables_are_written(monkeypatch):
    from transforms.sinks import staging as publishing

    def lost(folder, staging):
        assert list(pathlib.Path(staging).glob('labels-*.parquet'))  # both tables written
        assert list(pathlib.Path(staging).glob('errors-*.parquet'))
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(publishing, 'publish_staged', lost)


@pytest.mark.parametrize('fail', [_disk_full_while_writing,
                                  _worker_lost_once_both_tables_are_written],
                         ids=['while-writing', 'once-both-tables-are-written'])
def test_a_rerun_that_fails_leaves_the_date_as_the_earlier_run_left_it(
        inputs, tmp_path, mobilenet_v2_quant, monkeypatch, fail):
    images = tmp_path / 'images'
    shutil.copytree(inputs / 'images', images)
    (images / 'broken.jpg').write_bytes(b'\xff\xd8 not a jpeg')  # an errors row too
    out, day = tmp_path / 'out', tmp_path / 'out' / 'run_date=2026-01-01'
    first = run_cli('run', '--input', images, '--output', out,
                    '--model', mobilenet_v2_quant, '--run_id', 'first', '--run_date', '2026-01-01')
    assert first.code == 0, first.err
    before = {p.name: p.read_bytes() for p in day.iterdir() if p.is_file()}
    assert {'summary.json', 'labels-00000-of-00001.parquet',
            'errors-00000-of-00001.parquet'} <= set(before)

    (images / 'img_0.jpg').unlink()  # the re-run would write other rows
    fail(monkeypatch)
    with pytest.raises(Exception, match='No space left on device'):
        run_cli('run', '--input', images, '--output', out, '--model',
                mobilenet_v2_quant, '--run_id', 'failed', '--run_date', '2026-01-01')
    monkeypatch.undo()

    after = {p.name: p.read_bytes() for p in day.iterdir() if p.is_file()}
    assert after == before  # the same files, byte for byte: rows, errors and summary.json
    assert {r['run_id'] for r in read_parquet_rows(day, 'labels')} == {'first'}
    assert len(read_parquet_rows(day, 'labels')) == 3
    assert [r['uri'] for r in read_parquet_rows(day, 'errors')] == [str(images / 'broken.jpg')]


def test_a_rerun_drops_the_earlier_runs_shards_of_another_count(
        inputs, tmp_path, mobilenet_v2_quant):
    out, day = tmp_path / 'out', tmp_path / 'out' / 'run_date=2026-01-01'
    first = run_cli('run', '--input', inputs / 'images', '--output', out,
                    '--model', mobilenet_v2_quant, '--run_id', 'first', '--run_date', '2026-01-01')
    assert first.code == 0, first.err
    # As a run with more workers would have left them: the same rows in two shards.
    for name in ('labels', 'errors'):
        (day / f'{name}-00000-of-00001.parquet').rename(day / f'{name}-00000-of-00002.parquet')
        shutil.copy(day / f'{name}-00000-of-00002.parquet', day / f'{name}-00001-of-00002.parquet')
    assert len(read_parquet_rows(day, 'labels')) == 6
    (day / 'notes.txt').write_text('not ours: stays\n')
    (day / 'eval.json').write_text('{"top1": 0.5}\n')  # scores of rows the re-run replaces

    again = run_cli('run', '--input', inputs / 'images' / 'img_1.jpg', '--output', out,
                    '--model', mobilenet_v2_quant, '--run_id', 'again', '--run_date', '2026-01-01')
    assert again.code == 0, again.err
    assert sorted(p.name for p in day.iterdir() if p.is_file()) == [
        'errors-00000-of-00001.parquet', 'labels-00000-of-00001.parquet', 'notes.txt',
        'summary.json']
    assert not list(day.glob('.staging-*'))  # the run's own staging folder is gone
    assert [r['run_id'] for r in read_parquet_rows(day, 'labels')] == ['again']


def test_top_k_equal_to_class_count_is_accepted(inputs, tmp_path, mobilenet_v2_quant):
    out = tmp_path / 'out'
    result = run_cli('run', '--input', inputs / 'images' / 'img_2.jpg', '--output', out,
                     '--model', mobilenet_v2_quant, '--top_k', '1000')
    assert result.code == 0, result.err
    (row,) = read_parquet_rows(out, 'labels')
    assert sorted(label['index'] for label in row['labels']) == list(range(1000))
    assert abs(sum(label['score'] for label in row['labels']) - 1.0) < 1e-3


@pytest.mark.parametrize('value, job_label', [
    ('team=ml', True), ('Team=ml', True), ('k=a/b', True), ('{"team": "ml"}', True),
    ('labels.txt', False), ('/data/labels.txt', False), ('gs://b/x=1.txt', False)])
def test_labels_is_a_class_names_file_unless_it_is_a_dataflow_job_label(value, job_label):
    from pipeline.run import labels_alias
    for argv, flag in ((['--labels', value], '--labels'), ([f'--labels={value}'], '--labels=')):
        rewritten = labels_alias(argv)[0]
        assert rewritten.startswith(flag if job_label else '--labels_file'), (value, rewritten)


def test_a_class_names_file_named_like_a_job_label_is_still_a_file(tmp_path, monkeypatch):
    from pipeline.run import labels_alias
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'names=v2.txt').write_text('a\nb\n')
    assert labels_alias(['--labels', 'names=v2.txt']) == ['--labels_file', 'names=v2.txt']
