"""The whole job on real assets: classify, self-test, run, accuracy, Inception-v3 shape."""
import csv
import os

import duckdb
import pyarrow.parquet as pq
import pytest

from conftest import read_parquet_rows, run_cli, write_jpeg


def _top1(out: str) -> str:
    return out.strip().splitlines()[0].rsplit(' (score = ', 1)[0]


def test_classify_grace_hopper_and_panda(mobilenet_v2_quant, grace_hopper, panda):
    r = run_cli('classify', '--model', mobilenet_v2_quant, grace_hopper)
    assert r.code == 0, r.err
    assert _top1(r.out) == 'military uniform'
    lines = r.out.strip().splitlines()
    assert len(lines) == 5 and all(' (score = 0.' in line for line in lines)
    r = run_cli('classify', '--model', mobilenet_v2_quant, panda)
    assert r.code == 0 and _top1(r.out) == 'giant panda'


def test_self_test_passes_on_grace_hopper_and_fails_on_the_panda(
        mobilenet_v2_quant, grace_hopper, panda):
    ok = run_cli('classify', '--self_test', '--model', mobilenet_v2_quant, grace_hopper)
    assert ok.code == 0 and 'self-test passed' in ok.out
    bad = run_cli('classify', '--self_test', '--model', mobilenet_v2_quant, panda)
    assert bad.code == 1 and 'self-test FAILED' in bad.err and 'giant panda' in bad.err


def test_run_gives_the_same_top_labels_in_parquet(mobilenet_v2_quant, grace_hopper, panda, tmp_path):
    manifest = tmp_path / 'refs.txt'
    manifest.write_text(f'# reference photos\n{grace_hopper}\n\n{panda}\n')
    r = run_cli('run', '--input', manifest, '--output', tmp_path / 'out', '--model',
                mobilenet_v2_quant, '--resize', 'plain', '--top_k', '3')
    assert r.code == 0, r.err
    assert 'inputs     2' in r.out and 'labeled    2' in r.out and 'errors     0' in r.out
    rows = {os.path.basename(x['uri']): x for x in read_parquet_rows(tmp_path / 'out', 'labels')}
    assert rows['grace_hopper.jpg']['labels'][0]['label'] == 'military uniform'
    assert rows['cropped_panda.jpg']['labels'][0]['label'] == 'giant panda'
    assert rows['grace_hopper.jpg']['labels'][0]['index'] == 652
    assert (rows['grace_hopper.jpg']['width'], rows['grace_hopper.jpg']['height']) == (517, 606)
    assert all(len(x['labels']) == 3 and len(x['embedding']) == 1280 for x in rows.values())
    assert read_parquet_rows(tmp_path / 'out', 'errors') == []


REFERENCE = {'plain': (0.824, 0.951), 'crop': (0.886, 0.979)}  # verify_output.txt


@pytest.mark.parametrize('recipe', ['plain', 'crop'])
def test_imagenet_sample_accuracy_matches_the_reference(recipe, assets, mobilenet_v2_quant, tmp_path):
    sample = assets / 'imagenet_sample'
    truth = {os.path.basename(r['uri']): int(r['label_index'])
             for r in csv.DictReader(open(sample / 'manifest.csv'))}
    r = run_cli('run', '--input', sample / 'manifest.csv', '--output', tmp_path,
                '--model', mobilenet_v2_quant, '--resize', recipe)
    assert r.code == 0, r.err
    rows = read_parquet_rows(tmp_path, 'labels')
    assert len(rows) == 1000
    top1 = sum(truth[os.path.basename(x['uri'])] == x['labels'][0]['index'] for x in rows) / 1000
    top5 = sum(truth[os.path.basename(x['uri'])] in [l['index'] for l in x['labels']]
               for x in rows) / 1000
    ref1, ref5 = REFERENCE[recipe]
    assert abs(top1 - ref1) <= 0.02 and abs(top5 - ref5) <= 0.02, (top1, top5)
    # And the row-by-row agreement with a direct interpreter run stays high.
    ref = {os.path.basename(r['uri']): int(r[f'{recipe}_top5'].split()[0])
           for r in csv.DictReader(open(sample / 'reference_predictions.csv'))}
    agree = sum(ref[os.path.basename(x['uri'])] == x['labels'][0]['index'] for x in rows) / 1000
    assert agree >= 0.95, agree


def test_random_inception_v3_rows_open_in_pyarrow_and_duckdb(inception_keras, tmp_path):
    for i in range(5):
        write_jpeg(tmp_path / 'in' / f'p{i}.jpg', size=(500, 375), seed=i)
    out = tmp_path / 'out'
    r = run_cli('run', '--input', tmp_path / 'in', '--output', out, '--model', inception_keras,
                '--top_k', '4', '--batch_size', '4')
    assert r.code == 0, r.err
    table = pq.read_table(next(out.glob('*/labels-*.parquet')))
    assert str(table.schema.field('embedding').type) == 'list<item: float not null>'
    assert str(table.schema.field('processed_at').type) == 'timestamp[us, tz=UTC]'
    rows = table.to_pylist()
    assert len(rows) == 5
    for row in rows:
        assert len(row['embedding']) == 2048
        scores = [l['score'] for l in row['labels']]
        assert len(scores) == 4 and scores == sorted(scores, reverse=True)
        assert (row['width'], row['height']) == (500, 375)
    con = duckdb.connect()
    types = dict(con.execute(
        f"DESCRIBE SELECT * FROM read_parquet('{out}/*/labels-*.parquet')").fetchall()[i][:2]
        for i in range(10))
    assert types['labels'] == 'STRUCT("index" INTEGER, "label" VARCHAR, score FLOAT)[]'
    assert types['embedding'] == 'FLOAT[]' and types['width'] == 'INTEGER'
    n, dim, best = con.execute(
        f"SELECT count(*), max(len(embedding)), max(labels[1].score) "
        f"FROM read_parquet('{out}/*/labels-*.parquet')").fetchone()
    assert (n, dim) == (5, 2048) and 0 < best <= 1


def test_help_lists_every_flag_with_its_default():
    r = run_cli('run', '--help')
    assert r.code == 0
    for flag, default in [('--input', None), ('--output', None), ('--model', 'inception_v3'),
                          ('--top_k', '5'), ('--resize', 'crop'), ('--batch_size', None),
                          ('--precision', 'float32'), ('--max_pixels', '64000000'),
                          ('--labels_file', None), ('--skip_existing', None)]:
        assert flag in r.out
        if default:
            assert f'(default: {default})' in ' '.join(r.out.split()), flag
    c = run_cli('classify', '--help')
    assert c.code == 0 and '--self_test' in c.out and '(default: plain)' in ' '.join(c.out.split())
