"""Scheduled runs: date partitions, --skip_existing, the failure ledger.

Two runs on consecutive dates over a folder of real photos that gained 10 new
images, 1 renamed copy and 1 edited image in between; on the first date one
image meets a transient read fault (injected at the reader).
"""
from __future__ import annotations

import os
import pathlib
import shutil

import duckdb
import pytest

from conftest import run_cli
from pipeline.summary import read_summary
from transforms.incremental import Decision, Listed, decide

DAY1, DAY2 = '2026-11-20', '2026-11-21'


@pytest.fixture(scope='module')
def photos(assets):
    return sorted((assets / 'imagenet_sample' / 'images').glob('*.JPEG'))[::37][:23]


def _run(folder, out, model, date, *extra):
    result = run_cli('run', '--input', folder, '--output', out, '--model', model,
                     '--run_date', date, '--skip_existing', *extra)
    assert result.code == 0, result.err
    return read_summary(str(out), run_date=date), result


@pytest.fixture(scope='module')
def history(photos, mobilenet_v2_quant, tmp_path_factory):
    tmp = tmp_path_factory.mktemp('incremental')
    folder, out = tmp / 'bucket', tmp / 'out'
    folder.mkdir()
    old, new = photos[:12], photos[12:22]
    for p in old:
        shutil.copy(p, folder / p.name)
    (folder / 'broken.jpg').write_bytes(b'never an image')
    flaky = folder / old[3].name

    from transforms.storage import ObjectReader
    real_read = ObjectReader.read

    def faulty_read(self, uri, max_bytes):
        if uri == str(flaky):
            raise TimeoutError('injected: the store timed out')
        return real_read(self, uri, max_bytes)

    mp = pytest.MonkeyPatch()
    mp.setattr(ObjectReader, 'read', faulty_read)
    try:
        day1, _ = _run(folder, out, mobilenet_v2_quant, DAY1, '--read_retries', '2')
    finally:
        mp.undo()

    for p in new:  # 10 new images
        shutil.copy(p, folder / p.name)
    shutil.copy(folder / old[0].name, folder / 'renamed_copy.jpg')  # same bytes, new name
    edited = folder / old[1].name
    from PIL import Image
    Image.open(edited).rotate(90, expand=True).save(edited, format='JPEG', quality=80)
    later = edited.stat().st_mtime + 3600
    os.utime(edited, (later, later))

    day2, printed = _run(folder, out, mobilenet_v2_quant, DAY2)
    return dict(out=out, day1=day1, day2=day2, printed=printed, flaky=flaky, edited=edited,
                new=[folder / p.name for p in new], folder=folder, model=mobilenet_v2_quant)


def _rows(out: pathlib.Path) -> list[tuple]:
    return duckdb.sql(
        f"SELECT uri, CAST(run_date AS VARCHAR), run_id FROM read_parquet("
        f"'{out}/*/labels-*.parquet', hive_partitioning=true)").fetchall()


def test_the_first_run_labels_everything_and_records_the_transient_failure(history):
    d1 = history['day1']
    assert (d1['inputs'], d1['skipped'], d1['reused'], d1['labeled'], d1['errors']) == (
        13, 0, 0, 11, 2)
    assert d1['errors_by_class'] == {'read/read_failed': 1, 'decode/not_an_image': 1}
    assert d1['run_date'] == DAY1 and d1['balanced']


def test_the_second_run_labels_only_the_new_the_edited_and_the_retried(history):
    d2 = history['day2']
    # 24 listed: 10 unchanged photos and the broken file skipped (11), the renamed copy
    # reused (1), 10 new + 1 edited + 1 retried labeled (12), nothing failed.
    assert (d2['inputs'], d2['skipped'], d2['reused'], d2['labeled'], d2['errors']) == (
        24, 11, 1, 12, 0)
    assert d2['retried'] == 1
    assert d2['inputs'] == d2['skipped'] + d2['reused'] + d2['labeled'] + d2['errors']
    assert 'skipped    11' in history['printed'].out and 'reused     1' in history['printed'].out
    assert 'retried    1  (an earlier transient failure' in history['printed'].out


def test_the_day2_partition_holds_one_row_per_labeled_or_copied_image(history):
    rows = _rows(history['out'])
    day2 = {uri for uri, date, _ in rows if date == DAY2}
    expected = {str(p) for p in history['new']} | {str(history['edited']), str(history['flaky']),
                                                   str(history['folder'] / 'renamed_copy.jpg')}
    assert day2 == expected
    assert len(rows) == len({(u, d) for u, d, _ in rows}) == 11 + 13
    copy = duckdb.sql(
        f"SELECT a.top_label = b.top_label, a.embedding = b.embedding, a.content_sha256 = "
        f"b.content_sha256 FROM read_parquet('{history['out']}/*/labels-*.parquet', "
        f"hive_partitioning=true) a, read_parquet('{history['out']}/*/labels-*.parquet', "
        f"hive_partitioning=true) b WHERE a.uri LIKE '%renamed_copy.jpg' AND b.run_date = "
        f"'{DAY1}' AND a.content_sha256 = b.content_sha256").fetchall()
    assert copy == [(True, True, True)]


def test_every_row_of_day2_records_its_objects_listed_size_and_time(history):
    # Labeled and copied rows alike (the renamed file's row is another object's): what the
    # next run will skip them on, carried from the listing with each image. (Error rows
    # carry it too: day 2 skips day 1's undecodable file on its error row's.)
    found = duckdb.sql(
        f"SELECT uri, source_size, epoch(source_updated) FROM read_parquet("
        f"'{history['out']}/run_date={DAY2}/*.parquet', union_by_name=true)").fetchall()
    assert len(found) == 13  # 12 labeled, 1 copied; no errors on day 2
    for uri, size, updated in found:
        stat = pathlib.Path(uri).stat()
        assert size == stat.st_size and updated == pytest.approx(stat.st_mtime, abs=1e-3), uri


def test_rerunning_a_date_replaces_its_partition_without_duplicates(history):
    before = _rows(history['out'])
    again, _ = _run(history['folder'], history['out'], history['model'], DAY2)
    after = _rows(history['out'])
    assert len(after) == len(before)
    assert len({(u, d) for u, d, _ in after}) == len(after)
    assert {(u, d) for u, d, _ in after} == {(u, d) for u, d, _ in before}
    assert (again['skipped'], again['reused'], again['labeled']) == (
        history['day2']['skipped'], history['day2']['reused'], history['day2']['labeled'])
    assert {r for _, d, r in after if d == DAY1} == {r for _, d, r in before if d == DAY1}


# --- the decision, as a pure function --------------------------------------------------

def _row(**kw):
    base = dict(uri='u', model_id='m', source_size=10, source_updated=100.0, error=None,
                label_count=5)
    return base | kw


def _decide(listed, row, model_id='m', top_k=5, **kw):
    return decide(listed, row, model_id=model_id, top_k=top_k, **kw)


def test_an_unchanged_object_labeled_by_the_same_model_is_skipped():
    assert _decide(Listed('u', 10, 100.0), _row()) is Decision.SKIP
    assert _decide(Listed('u', 10, 100.0), _row(), top_k=3) is Decision.SKIP


def test_a_changed_size_or_time_or_another_model_reads_again():
    assert _decide(Listed('u', 11, 100.0), _row()) is Decision.READ
    assert _decide(Listed('u', 10, 101.0), _row()) is Decision.READ
    assert _decide(Listed('u', 10, 100.0), _row(), model_id='other') is Decision.READ
    assert _decide(Listed('u'), _row()) is Decision.READ  # a manifest: no stat
    assert _decide(Listed('u', 10, 100.0), None) is Decision.READ


def test_an_unchanged_object_whose_row_holds_fewer_labels_than_this_top_k_reads_again():
    assert _decide(Listed('u', 10, 100.0), _row(label_count=3), top_k=5) is Decision.READ
    # A row from an older file without the labels or stat columns: read, not a crash.
    assert _decide(Listed('u', 10, 100.0), _row(label_count=None)) is Decision.READ
    assert _decide(Listed('u', 10, 100.0), _row(source_size=None)) is Decision.READ


def test_transient_failures_are_retried_and_permanent_ones_only_when_asked_or_changed():
    transient, permanent = _row(error='read_failed'), _row(error='corrupt')
    assert _decide(Listed('u', 10, 100.0), transient) is Decision.RETRY
    assert _decide(Listed('u', 10, 100.0), permanent) is Decision.SKIP
    assert _decide(Listed('u', 10, 100.0), permanent, retry_errors=True) is Decision.READ
    assert _decide(Listed('u', 12, 100.0), permanent) is Decision.READ


def test_an_image_refused_by_the_store_is_tried_again_once_access_may_have_been_granted():
    # Granting read access changes neither the object's size nor its time.
    refused = _row(error='permission_denied', label_count=None)
    assert _decide(Listed('u', 10, 100.0), refused) is Decision.RETRY


def test_retry_errors_without_skip_existing_is_refused(tmp_path):
    result = run_cli('run', '--input', tmp_path, '--output', tmp_path / 'o', '--retry_errors')
    assert result.code == 2 and 'only applies with --skip_existing' in result.err


def test_a_copy_reused_under_another_top_k_has_that_many_labels(photos, mobilenet_v2_quant,
                                                                 tmp_path):
    from conftest import read_parquet_rows
    folder, out = tmp_path / 'bucket', tmp_path / 'out'
    folder.mkdir()
    for p in photos[:3]:
        shutil.copy(p, folder / p.name)
    _run(folder, out, mobilenet_v2_quant, '2026-11-01', '--top_k', '5')
    shutil.copy(photos[0], folder / 'copy-a.jpg')  # new URI, known content
    fewer, _ = _run(folder, out, mobilenet_v2_quant, '2026-11-02', '--top_k', '2')
    shutil.copy(photos[0], folder / 'copy-b.jpg')
    more, _ = _run(folder, out, mobilenet_v2_quant, '2026-11-03', '--top_k', '7')

    def labels_of(date):
        return {pathlib.Path(r['uri']).name: [x['label'] for x in r['labels']]
                for r in read_parquet_rows(out / f'run_date={date}', 'labels')}
    day1, day2, day3 = (labels_of(d) for d in ('2026-11-01', '2026-11-02', '2026-11-03'))
    # A smaller k: the copy's earlier row, cut to 2 labels.
    assert fewer['reused'] == 1 and day2 == {'copy-a.jpg': day1[photos[0].name][:2]}
    # A larger k: rows of 5 or 2 labels cannot stand for 7, so the copy is labeled again,
    # and so is every unchanged image (3 photos and copy-a), not skipped on its short row.
    assert (more['skipped'], more['reused'], more['labeled']) == (0, 0, 5)
    assert len(day3['copy-b.jpg']) == 7 and day3['copy-b.jpg'][:5] == day1[photos[0].name]
    assert {len(labels) for labels in day3.values()} == {7} and len(day3) == 5


def test_earlier_files_without_the_stat_columns_are_read_and_reused_under_this_model_name(
        photos, mobilenet_v2_quant, tmp_path):
    """Files from an older writer (or moved in by hand) lack source_size/source_updated:
    the incremental run reads their images again and reuses their rows by content, instead
    of failing once the run had started. The copied rows name this run's model file."""
    import pyarrow.parquet as pq
    from conftest import read_parquet_rows
    folder, out = tmp_path / 'bucket', tmp_path / 'out'
    folder.mkdir()
    for p in photos[:3]:
        shutil.copy(p, folder / p.name)
    (folder / 'broken.jpg').write_bytes(b'never an image')
    _run(folder, out, mobilenet_v2_quant, '2026-11-01')
    for f in (out / 'run_date=2026-11-01').glob('*.parquet'):
        table = pq.read_table(f)
        pq.write_table(table.drop_columns(['source_size', 'source_updated']), f)
    renamed = tmp_path / 'same-weights.tflite'  # the same model_id under another name
    shutil.copy(mobilenet_v2_quant, renamed)

    day2, _ = _run(folder, out, renamed, '2026-11-02')
    assert (day2['inputs'], day2['skipped'], day2['reused'], day2['labeled'],
            day2['errors']) == (4, 0, 3, 0, 1)
    rows = read_parquet_rows(out / 'run_date=2026-11-02', 'labels')
    assert {r['model'] for r in rows} == {'same-weights.tflite'} and len(rows) == 3
