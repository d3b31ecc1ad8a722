"""Where a run's files live (transforms.sinks.layout): the date's folder, its tables,
summary and eval, and the staging folders readers leave out."""
from __future__ import annotations

from transforms.sinks.layout import (is_staged, partition_dir, partition_files, staging_dir,
                                     table_files)


def test_a_dates_files_are_its_tables_summary_and_eval_and_nothing_else(tmp_path):
    day = tmp_path / 'run_date=2026-01-01'
    (day / '.staging-run-1').mkdir(parents=True)
    names = ['labels-00000-of-00002.parquet', 'labels-00001-of-00002.parquet',
             'errors-00000-of-00001.parquet', 'summary.json', 'eval.json', 'notes.txt',
             'labels.csv', '.staging-run-1/labels-00000-of-00001.parquet']
    for name in names:
        (day / name).write_text(name)
    assert partition_dir(str(tmp_path), '2026-01-01') == str(day)
    assert sorted(p.rsplit('/', 1)[1] for p in partition_files(str(day))) == [
        'errors-00000-of-00001.parquet', 'eval.json', 'labels-00000-of-00002.parquet',
        'labels-00001-of-00002.parquet', 'summary.json']
    assert table_files(str(day)) == {
        'labels': [str(day / 'labels-00000-of-00002.parquet'),
                   str(day / 'labels-00001-of-00002.parquet')],
        'errors': [str(day / 'errors-00000-of-00001.parquet')]}


def test_a_file_below_a_staging_folder_is_staged_wherever_the_output_lives():
    for folder in ('/data/out/run_date=2026-01-01', 'gs://b/out/run_date=2026-01-01'):
        staging = staging_dir(folder, 'run-1a2b')
        assert staging == f'{folder}/.staging-run-1a2b'
        assert is_staged(f'{staging}/labels-00000-of-00001.parquet')
        assert is_staged(f'{staging}/beam-temp-labels-9/x.parquet')
        assert not is_staged(f'{folder}/labels-00000-of-00001.parquet')
    assert not is_staged('/data/out/run_date=2026-01-01/my.staging-notes/labels-0.parquet')
    # an output folder that happens to be named like one is not a staging folder
    assert not is_staged('gs://b/.staging-area/out/run_date=2026-01-01/labels-0.parquet')
    assert is_staged('gs://b/.staging-area/out/run_date=2026-01-01/.staging-r/labels-0.parquet')
