"""Nothing lost, nothing crashes: one run over a corpus of good, odd and hostile inputs.

Every input URI must end as exactly one labels row or exactly one errors row
(never both, never neither, never twice), each bad input with its stable
(stage, error class), and the summary must balance. The same corpus run again,
and run on two worker processes, must give the same rows bit-for-bit.
"""
from __future__ import annotations

import collections
import hashlib
import pathlib
import re

import numpy as np
import pytest
from PIL import Image

from conftest import read_parquet_rows, run_cli
from corpus import (CORPUS_MAX_BYTES, CORPUS_MAX_PIXELS, build_corpus, encode, exif_rotated,
                    write_manifest)
from transforms.errors import ERROR_CLASSES, STAGES

MULTI_PROCESS = ('--direct_running_mode=multi_processing', '--direct_num_workers=2')


def _run_corpus(model, manifest: pathlib.Path, out: pathlib.Path, *extra: str):
    result = run_cli('run', '--input', manifest, '--output', out, '--model', model,
                     '--max_pixels', CORPUS_MAX_PIXELS, '--max_bytes', CORPUS_MAX_BYTES,
                     '--batch_size', 8, *extra)
    assert result.code == 0, result.err
    assert 'Traceback' not in result.err
    return result, read_parquet_rows(out, 'labels'), read_parquet_rows(out, 'errors')


def _summary_numbers(stdout: str) -> dict[str, int]:
    inputs = re.search(r'inputs\s+(\d+)\s+\(listed (\d+), duplicate URIs dropped (\d+)\)', stdout)
    labeled = re.search(r'labeled\s+(\d+)', stdout)
    errors = re.search(r'errors\s+(\d+)', stdout)
    assert inputs and labeled and errors, stdout
    return {'inputs': int(inputs[1]), 'listed': int(inputs[2]), 'dropped': int(inputs[3]),
            'labeled': int(labeled[1]), 'errors': int(errors[1])}


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp('corpus')
    cases = build_corpus(root / 'inputs')
    manifest = write_manifest(root / 'manifest.txt', cases)
    return root, cases, manifest


@pytest.fixture(scope='module')
def corpus_run(corpus, mobilenet_v2_quant):
    root, cases, manifest = corpus
    out = root / 'out-single'
    result, labels, errors = _run_corpus(mobilenet_v2_quant, manifest, out)
    return out, result, labels, errors


def test_corpus_is_varied(corpus):
    _, cases, _ = corpus
    assert len({c.name for c in cases}) == len(cases) >= 30
    bad = [c for c in cases if not c.ok]
    assert len(cases) - len(bad) >= 15 and len(bad) >= 15
    # Every bad case names a real stage and error class of the shared vocabulary.
    for case in bad:
        stage, error = case.expected
        assert stage in STAGES and error in ERROR_CLASSES, case


def test_every_input_ends_as_exactly_one_row(corpus, corpus_run):
    _, cases, _ = corpus
    out, result, labels, errors = corpus_run
    by_uri = {c.uri: c for c in cases}

    label_uris = collections.Counter(r['uri'] for r in labels)
    error_uris = collections.Counter(r['uri'] for r in errors)
    # Never twice, never both, never neither, and nothing that was not listed.
    assert [u for u, n in label_uris.items() if n > 1] == []
    assert [u for u, n in error_uris.items() if n > 1] == []
    assert set(label_uris) & set(error_uris) == set()
    assert set(label_uris) | set(error_uris) == set(by_uri)

    # Row by row: each case where it belongs, bad ones with their stable class.
    errors_by_uri = {r['uri']: r for r in errors}
    mismatches = []
    for case in cases:
        if case.ok:
            if case.uri not in label_uris:
                row = errors_by_uri[case.uri]
                mismatches.append((case.name, 'ok', (row['stage'], row['error']), row['message']))
        else:
            row = errors_by_uri.get(case.uri)
            got = (row['stage'], row['error']) if row else 'labeled'
            if got != case.expected:
                mismatches.append((case.name, case.expected, got))
    assert mismatches == []

    # Error rows carry a human message; rows from after the read stage carry the bytes' hash.
    for row in errors:
        assert len(row['message']) > 5, row
        assert '\n' not in row['message'].strip(), row
        if row['stage'] == 'read':
            assert row['content_sha256'] is None
        else:
            data = pathlib.Path(row['uri']).read_bytes()
            assert row['content_sha256'] == hashlib.sha256(data).hexdigest()

    # Label rows: top-5 of 1000 ImageNet classes, a 1280-d MobileNetV2 embedding.
    for row in labels:
        data = pathlib.Path(row['uri']).read_bytes()
        assert row['content_sha256'] == hashlib.sha256(data).hexdigest()
        scores = [label['score'] for label in row['labels']]
        assert len(scores) == 5 and scores == sorted(scores, reverse=True)
        assert all(0 <= label['index'] < 1000 for label in row['labels'])
        emb = np.asarray(row['embedding'], np.float32)
        assert emb.shape == (1280,) and np.isfinite(emb).all() and emb.any()
        assert row['width'] >= 1 and row['height'] >= 1

    sizes = {by_uri[r['uri']].name: (r['width'], r['height']) for r in labels}
    assert sizes['jpeg_4000x3'] == (4000, 3)
    assert sizes['png_1x1'] == (1, 1)
    assert sizes['jpeg_exif_rotated'] == (96, 64)  # stored 64x96, reported upright
    assert sizes['gif_animated'] == (48, 32)


def test_summary_balances_and_counts_duplicates(corpus, corpus_run):
    _, cases, _ = corpus
    out, result, labels, errors = corpus_run
    numbers = _summary_numbers(result.out)
    good = sum(c.ok for c in cases)
    assert numbers['inputs'] == len(cases)
    assert numbers['listed'] == sum(c.listed for c in cases) == len(cases) + 1
    assert numbers['dropped'] == 1
    assert numbers['labeled'] == good == len(labels)
    assert numbers['errors'] == len(cases) - good == len(errors)
    assert numbers['inputs'] == numbers['labeled'] + numbers['errors']
    assert 'MISMATCH' not in result.out

    from pipeline.summary import read_summary
    summary = read_summary(str(out))
    assert summary['inputs'] == summary['labeled'] + summary['errors'] == len(cases)
    expected_classes = collections.Counter(
        '/'.join(c.expected) for c in cases if not c.ok)
    assert summary['errors_by_class'] == dict(expected_classes)
    # The duplicated URI is one labels row, not two.
    twice = [c for c in cases if c.listed == 2]
    assert twice and all(sum(r['uri'] == c.uri for r in labels) == 1 for c in twice)


def test_bomb_is_refused_by_max_pixels_not_decoded(corpus, corpus_run):
    _, cases, _ = corpus
    _, _, _, errors = corpus_run
    names = {c.uri: c.name for c in cases}
    bombs = {names[r['uri']]: r for r in errors if names[r['uri']].startswith('bomb_')}
    assert set(bombs) == {'bomb_png', 'bomb_png_moderate', 'bomb_gif', 'bomb_jpeg'}
    for row in bombs.values():
        assert (row['stage'], row['error']) == ('decode', 'too_large')
        assert f'--max_pixels={CORPUS_MAX_PIXELS}' in row['message'], row['message']
    assert '50000x50000' in bombs['bomb_png']['message']


def _comparable(labels, errors):
    label_rows = {r['uri']: ([(l['index'], l['label'], l['score']) for l in r['labels']],
                             list(r['embedding']), r['content_sha256'], r['width'], r['height'],
                             r['model_id'])
                  for r in labels}
    error_rows = {r['uri']: (r['stage'], r['error'], r['content_sha256']) for r in errors}
    return label_rows, error_rows


def test_repeated_run_is_bit_for_bit_identical(corpus, corpus_run, mobilenet_v2_quant):
    root, cases, manifest = corpus
    _, _, labels, errors = corpus_run
    _, labels2, errors2 = _run_corpus(mobilenet_v2_quant, manifest, root / 'out-again')
    first, second = _comparable(labels, errors), _comparable(labels2, errors2)
    assert len(first[0]) == sum(c.ok for c in cases)
    assert first == second
    # A new run id each time, and nothing else differs.
    assert {r['run_id'] for r in labels} != {r['run_id'] for r in labels2}


def test_multi_process_run_gives_the_same_rows(corpus, corpus_run, mobilenet_v2_quant):
    root, cases, manifest = corpus
    _, _, labels, errors = corpus_run
    result, labels_mp, errors_mp = _run_corpus(mobilenet_v2_quant, manifest,
                                               root / 'out-multi', *MULTI_PROCESS)
    assert _comparable(labels_mp, errors_mp) == _comparable(labels, errors)
    numbers = _summary_numbers(result.out)
    assert numbers['inputs'] == numbers['labeled'] + numbers['errors'] == len(cases)


def test_exif_rotated_photo_labels_like_the_upright_photo(tmp_path, grace_hopper,
                                                          mobilenet_v2_quant):
    """Grace Hopper's photo stored turned 90 degrees with EXIF orientation 6."""
    upright = np.asarray(Image.open(grace_hopper).convert('RGB'))
    assert upright.shape == (606, 517, 3)
    photos = tmp_path / 'photos'
    photos.mkdir()
    (photos / 'upright.png').write_bytes(encode(Image.fromarray(upright), 'PNG'))
    (photos / 'rotated.png').write_bytes(exif_rotated(upright, 'PNG'))
    (photos / 'upright.jpg').write_bytes(encode(Image.fromarray(upright), 'JPEG', quality=95))
    (photos / 'rotated.jpg').write_bytes(exif_rotated(upright, 'JPEG', quality=95))
    with Image.open(photos / 'rotated.jpg') as stored:
        assert stored.size == (606, 517)  # really stored sideways

    out = tmp_path / 'out'
    result = run_cli('run', '--input', photos, '--output', out, '--model', mobilenet_v2_quant,
                     '--resize', 'plain')
    assert result.code == 0, result.err
    assert read_parquet_rows(out, 'errors') == []
    rows = {pathlib.Path(r['uri']).name: r for r in read_parquet_rows(out, 'labels')}
    assert set(rows) == {'upright.png', 'rotated.png', 'upright.jpg', 'rotated.jpg'}
    for row in rows.values():
        assert (row['width'], row['height']) == (517, 606)
        assert row['labels'][0]['label'] == 'military uniform'
    # Lossless storage: the rotated photo decodes to the very same pixels.
    assert rows['rotated.png']['labels'] == rows['upright.png']['labels']
    assert rows['rotated.png']['embedding'] == rows['upright.png']['embedding']
