"""`imagelabel similar` over a real run, and the chunked nearest-neighbour search."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_cli
from report_runs import mixed_photos, mixed_run, without_top_label  # noqa: F401 - fixtures
from pipeline.similar import Chunk, nearest


def similar(*args) -> list[dict]:
    result = run_cli('similar', *args, '--format', 'json')
    assert result.code == 0, result.err
    return json.loads(result.out)


def test_an_exact_copy_is_the_first_neighbour_and_neighbours_come_in_order(
        mixed_run, mixed_photos):
    query = mixed_photos / 'n01443537_goldfish.JPEG'
    rows = similar('--output', mixed_run, '--uri', query, '--k', '5')
    assert rows[0]['uri'] == str(mixed_photos / 'copy_of_goldfish.jpg')
    assert rows[0]['similarity'] == pytest.approx(1.0, abs=1e-5)
    assert rows[0]['top_label'] == 'goldfish'
    assert [r['rank'] for r in rows] == [1, 2, 3, 4, 5]
    sims = [r['similarity'] for r in rows]
    assert sims == sorted(sims, reverse=True) and sims[1] < 1.0 - 1e-3
    assert str(query) not in [r['uri'] for r in rows]  # not its own neighbour


def test_an_output_older_than_the_top_label_column_gets_it_from_the_labels(
        mixed_run, mixed_photos, tmp_path):
    old = without_top_label(mixed_run, tmp_path / 'old')
    query = mixed_photos / 'n01443537_goldfish.JPEG'
    assert similar('--output', old, '--uri', query, '--k', '4') == similar(
        '--output', mixed_run, '--uri', query, '--k', '4')


def test_a_new_image_is_embedded_with_the_runs_model(mixed_run, mixed_photos,
                                                     mobilenet_v2_quant, tmp_path):
    fresh = tmp_path / 'another_copy.jpg'
    fresh.write_bytes((mixed_photos / 'n01443537_goldfish.JPEG').read_bytes())
    rows = similar('--output', mixed_run, '--image', fresh, '--model', mobilenet_v2_quant,
                   '--k', '3')
    assert {r['uri'] for r in rows[:2]} == {str(mixed_photos / 'n01443537_goldfish.JPEG'),
                                            str(mixed_photos / 'copy_of_goldfish.jpg')}
    assert rows[0]['similarity'] == pytest.approx(1.0, abs=1e-5)
    assert rows[1]['similarity'] == pytest.approx(1.0, abs=1e-5)
    assert rows[2]['similarity'] < 0.99


def test_a_model_with_another_model_id_is_refused_with_one_line(mixed_run, mixed_photos,
                                                                 mobilenet_v2_quant):
    result = run_cli('similar', '--output', mixed_run, '--image',
                     mixed_photos / 'n01440764_tench.JPEG', '--model', mobilenet_v2_quant,
                     '--resize', 'plain')
    assert result.code == 2 and result.out == ''
    assert 'embeddings of different models are not comparable' in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_text_output_lists_rank_similarity_label_and_uri(mixed_run, mixed_photos):
    result = run_cli('similar', '--output', mixed_run, '--uri',
                     mixed_photos / 'n02701002_ambulance.JPEG', '--k', '2')
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[1].split() == ['rank', 'similarity', 'top', 'label', 'uri']
    rank, sim, *_ = lines[2].split()
    assert rank == '1' and float(sim) == pytest.approx(1.0, abs=1e-5)  # the hostile-named copy
    assert lines[2].endswith('<img src=x onerror=alert(1)>.jpg')


@pytest.mark.parametrize('uri, message', [
    ('broken.jpg', 'failed in the run (decode/not_an_image), so it has no embedding'),
    ('nowhere.jpg', 'is not a labeled image of the run'),
])
def test_a_uri_without_an_embedding_is_refused_with_one_line(mixed_run, mixed_photos, uri,
                                                              message):
    result = run_cli('similar', '--output', mixed_run, '--uri', mixed_photos / uri)
    assert result.code == 2 and message in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_the_chunked_search_equals_a_search_over_all_rows_at_once():
    rng = np.random.default_rng(3)
    emb = rng.normal(size=(1000, 16)).astype(np.float32)
    uris = [f'u{i:04d}' for i in range(1000)]
    query = rng.normal(size=16).astype(np.float32)
    chunks = [Chunk(uris[i:i + 64], ['x'] * len(uris[i:i + 64]), emb[i:i + 64])
              for i in range(0, 1000, 64)]
    got = nearest(query, chunks, k=7, exclude_uri='u0000')
    sims = (emb / np.linalg.norm(emb, axis=1, keepdims=True)) @ (query / np.linalg.norm(query))
    sims[0] = -np.inf
    expected = np.argsort(-sims)[:7]
    assert [r.uri for r in got] == [uris[i] for i in expected]
    assert [r.similarity for r in got] == pytest.approx(sims[expected].tolist(), abs=1e-6)


def test_ties_go_to_the_first_uri_whatever_k_and_the_chunking():
    emb = np.ones((6, 4), np.float32)  # six identical embeddings: every one a tie
    uris = ['q', 'e', 'd', 'c', 'b', 'a']
    one = [Chunk(uris, ['x'] * 6, emb)]
    split = [Chunk(uris[:3], ['x'] * 3, emb[:3]), Chunk(uris[3:], ['x'] * 3, emb[3:])]
    for chunks in (one, split):
        assert [r.uri for r in nearest(emb[0], chunks, k=1)] == ['a']
        assert [r.uri for r in nearest(emb[0], chunks, k=3, exclude_uri='a')] == ['b', 'c', 'd']


def test_a_row_that_is_not_finite_is_left_out_and_counted_not_scored_zero():
    emb = np.array([[1, 0], [np.nan, 1], [0, 1], [np.inf, 0]], np.float32)
    not_finite = [0]
    got = nearest(np.array([1, 0.1], np.float32), [Chunk(['a', 'nan', 'b', 'inf'], ['x'] * 4, emb)],
                  k=4, not_finite=not_finite)
    assert [r.uri for r in got] == ['a', 'b'] and not_finite == [2]


def test_a_query_that_is_not_finite_is_refused():
    with pytest.raises(ValueError, match='not finite'):
        nearest(np.array([np.nan, 1], np.float32),
                [Chunk(['a'], ['x'], np.ones((1, 2), np.float32))], k=1)


@pytest.mark.parametrize('tool', ['similar', 'report'])
def test_a_parquet_file_without_the_runs_columns_is_one_line(tool, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    out = tmp_path / 'out'
    out.mkdir()
    pq.write_table(pa.table({'uri': ['a.jpg'], 'score': [0.5]}), out / 'labels-0.parquet')
    args = ['--uri', 'a.jpg'] if tool == 'similar' else ['--out', tmp_path / 'r.html']
    result = run_cli(tool, '--output', out, *args)
    assert result.code == 2, (result.out, result.err)
    assert 'labels-0.parquet has no' in result.err and 'labels file of imagelabel run' in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_an_image_with_several_rows_is_listed_once_with_its_best_row():
    # 'x' labeled on two dates (two rows, same embedding) and, in the second chunk, once
    # more through a head; k=2 must still give two different images.
    emb = np.array([[1, 0], [1, 0.01], [1, 0.2], [0, 1]], np.float32)
    first = Chunk(['x', 'x', 'y', 'z'], ['cat', 'cat', 'dog', 'car'], emb)
    second = Chunk(['x'], ['pet'], emb[:1])
    got = nearest(np.array([1, 0], np.float32), [first, second], k=2)
    assert [(r.uri, r.top_label) for r in got] == [('x', 'cat'), ('y', 'dog')]
    assert [r.rank for r in got] == [1, 2]
