"""Publishing a run's Parquet tables (transforms.sinks.staging): staged tables move into
the date, the earlier run's files go, and a retry after a crash while moving or while
deleting, or after success, ends the same."""
from __future__ import annotations

import pathlib

import pytest


def _date_with_an_earlier_run_and_a_staged_one(tmp_path):
    """A date written by an earlier run (3 labels shards, 2 errors shards, summary, eval),
    this run's two tables staged (each file holding its own name), and the staging
    folders of three runs that failed: two of them two days ago (one after writing, one
    before its writers opened a file), one a minute ago."""
    import os
    import time
    from transforms.sinks.layout import staging_dir
    day = tmp_path / 'run_date=2026-01-01'
    staging = pathlib.Path(staging_dir(str(day), 'run-abc'))
    earlier = ['labels-00000-of-00003.parquet', 'labels-00001-of-00003.parquet',
               'labels-00002-of-00003.parquet', 'errors-00000-of-00001.parquet',
               'errors-00001-of-00002.parquet', 'summary.json', 'eval.json', 'notes.txt']
    for name in earlier:
        (day / name).parent.mkdir(parents=True, exist_ok=True)
        (day / name).write_text(f'earlier {name}')
    for name in ('labels-00000-of-00001.parquet', 'errors-00000-of-00001.parquet'):
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        (staging / name).write_text(f'ours {name}')
    late = pathlib.Path(staging_dir(str(day), 'failed-late')) / 'labels-00000-of-00001.parquet'
    late.parent.mkdir()
    late.write_text('left by a run that failed before publishing')
    (pathlib.Path(staging_dir(str(day), 'failed-early')) / 'beam-temp-labels-1a2b').mkdir(
        parents=True)
    young = pathlib.Path(staging_dir(str(day), 'young')) / 'beam-temp-labels-5e6f' / 'x.parquet'
    young.parent.mkdir(parents=True)
    young.write_text('a run of the date still going, or one that failed a minute ago')
    two_days_ago = time.time() - 2 * 24 * 3600
    for token in ('failed-late', 'failed-early'):
        for root, dirs, files in os.walk(staging_dir(str(day), token)):
            for path in [root] + [os.path.join(root, f) for f in files]:
                os.utime(path, (two_days_ago, two_days_ago))
    return day, staging


def _contents(day) -> dict[str, str]:
    """The date's files, and its folders (hidden ones included) as None."""
    return {f.name: f.read_text() if f.is_file() else None for f in sorted(day.iterdir())}


OURS_IN_PLACE = {'.staging-young': None,
                 'errors-00000-of-00001.parquet': 'ours errors-00000-of-00001.parquet',
                 'labels-00000-of-00001.parquet': 'ours labels-00000-of-00001.parquet',
                 'notes.txt': 'earlier notes.txt'}


def test_publishing_moves_the_staged_tables_in_and_deletes_the_earlier_runs_files(tmp_path):
    from transforms.sinks.staging import publish_staged
    day, staging = _date_with_an_earlier_run_and_a_staged_one(tmp_path)
    tables = publish_staged(str(day), str(staging))
    # The same-named errors file is replaced, other shard counts and the earlier summary
    # and eval go, a file that is not the run's stays; this run's staging folder goes, and
    # so do those of the runs that failed two days ago; the young one stays.
    assert _contents(day) == OURS_IN_PLACE
    assert [pathlib.Path(t).name for t in tables] == [
        'errors-00000-of-00001.parquet', 'labels-00000-of-00001.parquet']


@pytest.mark.parametrize('step, moved', [('rename', 1), ('delete', 2)],
                         ids=['after-one-rename', 'after-the-renames'])
def test_publishing_again_after_a_crash_midway_or_after_success_ends_the_same(tmp_path, step,
                                                                             moved):
    from apache_beam.io.filesystems import FileSystems
    from transforms.sinks import staging as publishing
    day, staging = _date_with_an_earlier_run_and_a_staged_one(tmp_path)
    real = getattr(FileSystems, step)

    def crash(sources, *more):  # the worker dies: after the first rename, or the first delete
        if step == 'rename':
            real(sources[:1], more[0][:1])
        raise OSError('worker lost')
    setattr(FileSystems, step, staticmethod(crash))
    try:
        with pytest.raises(OSError, match='worker lost'):
            publishing.publish_staged(str(day), str(staging))
    finally:
        setattr(FileSystems, step, staticmethod(real))
    # Tables moved already: a retry must not take them for an earlier run's files.
    assert len(list(staging.glob('*.parquet'))) == 2 - moved
    publishing.publish_staged(str(day), str(staging))
    assert _contents(day) == OURS_IN_PLACE
    publishing.publish_staged(str(day), str(staging))  # a third attempt: nothing left to do
    assert _contents(day) == OURS_IN_PLACE


def test_a_failure_cleaning_up_leftovers_is_said_and_does_not_fail_the_published_run(
        tmp_path, monkeypatch, caplog):
    from transforms.sinks import staging as publishing
    day, staging = _date_with_an_earlier_run_and_a_staged_one(tmp_path)

    def gone(folder):  # another run of the date deleted the same leftovers first
        raise FileNotFoundError(f'{folder}/.staging-failed-late')
    monkeypatch.setattr(publishing, '_staged_files', gone)
    publishing.publish_staged(str(day), str(staging))
    expected = dict(OURS_IN_PLACE, **{'.staging-failed-early': None, '.staging-failed-late': None})
    assert _contents(day) == expected  # this run is in place; the leftovers wait
    assert 'leftover staging folders not cleaned up: FileNotFoundError' in caplog.text


def test_a_record_cut_short_by_a_crash_is_listed_again(tmp_path):
    from transforms.sinks.staging import publish_staged
    day, staging = _date_with_an_earlier_run_and_a_staged_one(tmp_path)
    (staging / '_publishing.json').write_text('["labels-000')  # written before any move
    publish_staged(str(day), str(staging))
    assert _contents(day) == OURS_IN_PLACE


def test_publish_staged_as_a_step_publishes_once_for_all_the_written_files(tmp_path,
                                                                          monkeypatch):
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from transforms.sinks import staging as publishing
    day, staging = _date_with_an_earlier_run_and_a_staged_one(tmp_path)
    calls = []
    real = publishing.publish_staged
    monkeypatch.setattr(publishing, 'publish_staged',
                        lambda *args: calls.append(args) or real(*args))
    with TestPipeline() as p:
        _ = (p | beam.Create([str(staging / name) for name in (
                'labels-00000-of-00001.parquet', 'errors-00000-of-00001.parquet')])
             | publishing.PublishStaged(str(day), str(staging)))
    assert calls == [(str(day), str(staging))]
    assert _contents(day) == OURS_IN_PLACE
