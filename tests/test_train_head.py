"""train-head on real photos: a split ImageNet's names do not spell out, from stored embeddings.

The split is ImageNet's animals (class indices 0-397: fish, birds, reptiles, dogs,
insects...) against everything else (objects, food, scenes, plants): no ImageNet
name says "animal", so the head must learn the group from the embedding. Three in
five photos of the sample (by class index) are labeled with `run`; train-head
learns from their stored embeddings; `eval --head` (the `run --head` pipeline,
then scored) labels the other two in five, which it never saw.
"""
import csv
import datetime
import json
import pathlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import read_parquet_rows, run_cli
from transforms.schema import ERRORS_SCHEMA, LABELS_SCHEMA

EXIT_USAGE = 2
ANIMALS = range(0, 398)


def _group(label_index: int) -> str:
    return 'animal' if label_index in ANIMALS else 'other'


@pytest.fixture(scope='module')
def sample(assets, tmp_path_factory):
    """Training and held-out photos of the ImageNet sample, with their groups."""
    root = tmp_path_factory.mktemp('groups')
    rows = list(csv.DictReader(open(assets / 'imagenet_sample' / 'manifest.csv')))
    folder = assets / 'imagenet_sample'
    train = [(str(folder / r['uri']), _group(int(r['label_index']))) for r in rows
             if int(r['label_index']) % 5 < 3]
    held_out = [(str(folder / r['uri']), _group(int(r['label_index']))) for r in rows
                if int(r['label_index']) % 5 >= 3]
    for name, pairs in (('train', train), ('held_out', held_out)):
        with open(root / f'{name}.csv', 'w') as f:
            f.write('uri,label\n' + ''.join(f'{u},{g}\n' for u, g in pairs))
    return root, dict(train), dict(held_out)


@pytest.fixture(scope='module')
def trained(sample, mobilenet_v2_quant):
    """label -> train-head -> eval --head (run --head, scored) on the held-out photos."""
    root, train, held_out = sample
    labeled = run_cli('run', '--input', root / 'train.csv', '--output', root / 'embeddings',
                      '--model', mobilenet_v2_quant)
    assert labeled.code == 0, labeled.err
    # One more labeled photo that was never run: it must be reported, not silently dropped.
    with open(root / 'labels.csv', 'w') as f:
        f.write((root / 'train.csv').read_text() + f'{root / "never_run.jpg"},other\n')
    trained = run_cli('train-head', '--embeddings', f'{root}/embeddings/**/labels-*.parquet',
                      '--labels', root / 'labels.csv', '--output', root / 'head.keras')
    assert trained.code == 0, trained.err
    # eval runs the very pipeline of `run --head`, then scores its rows by the manifest.
    headed = run_cli('eval', '--input', root / 'held_out.csv', '--output', root / 'headed',
                     '--model', mobilenet_v2_quant, '--head', root / 'head.keras')
    assert headed.code == 0, headed.err
    return root, trained, json.loads((root / 'head.json').read_text())


def test_the_head_beats_the_majority_class_on_its_held_out_test_split(trained, sample):
    _, result, report = trained
    assert report['class_names'] == ['animal', 'other']
    assert report['train_images'] + report['test_images'] == 600
    assert report['test_images'] == 120  # 20% of each class, stratified
    assert report['majority_rate'] == pytest.approx(0.6)  # 'other' is 60% of the photos
    assert report['test_accuracy'] >= report['majority_rate'] + 0.2, report['test_accuracy']
    matrix = np.array(report['confusion_matrix'])
    assert matrix.sum() == 120 and np.trace(matrix) / 120 == pytest.approx(report['test_accuracy'])
    assert matrix.sum(axis=1).tolist() == [48, 72]  # true animals, true others in the test split


def test_training_prints_train_and_test_accuracy_per_epoch(trained):
    _, result, report = trained
    epochs = [line for line in result.out.splitlines() if line.startswith('epoch')]
    assert len(epochs) == len(report['epochs']) == 30
    assert 'train accuracy' in epochs[0] and 'test accuracy' in epochs[0]
    last = report['epochs'][-1]
    assert f'test accuracy {last["test_accuracy"]:.4f}' in epochs[-1]


def test_a_labeled_uri_without_an_embedding_is_reported(trained):
    root, result, report = trained
    assert report['missing_embeddings'] == [str(root / 'never_run.jpg')]
    assert '1 labeled URIs have no embedding' in result.out


def test_the_head_records_the_base_model_it_learned_from(trained, mobilenet_v2_quant):
    root, _, report = trained
    rows = read_parquet_rows(root / 'embeddings', 'labels')
    assert report['base_model_id'] == rows[0]['model_id']
    assert report['embedding_dim'] == len(rows[0]['embedding']) == 1280
    assert report['base_model'] == mobilenet_v2_quant.name


def test_run_with_the_head_agrees_with_the_groups_of_photos_it_never_saw(trained, sample):
    root, _, report = trained
    _, train, held_out = sample
    rows = read_parquet_rows(root / 'headed', 'labels')
    assert len(rows) == len(held_out) == 400 and not set(held_out) & set(train)
    assert all([x['label'] for x in r['labels']] in (['animal', 'other'], ['other', 'animal'])
               and len(r['embedding']) == 1280 for r in rows)
    agree = sum(r['top_label'] == held_out[r['uri']] for r in rows) / len(rows)
    majority = max(list(held_out.values()).count(g) for g in ('animal', 'other')) / 400
    assert agree >= majority + 0.2, agree
    assert agree >= report['test_accuracy'], (agree, report['test_accuracy'])
    # eval --head scored the same rows against the groups, by the head's own class names.
    scored = json.loads(next((root / 'headed').glob('run_date=*/eval.json')).read_text())
    assert scored['count'] == 400 and scored['top5_k'] == 2
    assert scored['top1'] == pytest.approx(agree)
    assert {c['label'] for c in scored['per_class']} == {'animal', 'other'}


def _labels_parquet(path, model_id, uris, dim=4):
    """A small labels file in the run's schema, for the checks that need no model."""
    when = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    rows = [{'uri': u, 'labels': [{'index': 0, 'label': 'x', 'score': 1.0}], 'top_label': 'x',
             'embedding': [float(i)] * dim, 'model': 'm.tflite', 'model_id': model_id,
             'content_sha256': '0', 'width': 1, 'height': 1, 'run_id': 'r',
             'processed_at': when} for i, u in enumerate(uris)]
    pq.write_table(pa.Table.from_pylist(rows, schema=LABELS_SCHEMA), path)


def test_a_broken_link_among_the_labels_files_is_passed_over_as_a_run_would_not_read_it(
        tmp_path):
    from pipeline.train_head import read_embeddings
    _labels_parquet(tmp_path / 'labels-a.parquet', 'aaaa-1111', ['/x/1.jpg', '/x/2.jpg'])
    (tmp_path / 'labels-b.parquet').symlink_to(tmp_path / 'gone' / 'labels-b.parquet')
    assert sorted(read_embeddings(str(tmp_path / 'labels-*.parquet')).uris) == [
        '/x/1.jpg', '/x/2.jpg']


def test_labels_a_run_staged_but_never_put_in_place_are_not_read(tmp_path):
    from pipeline.train_head import read_embeddings
    day = tmp_path / 'out' / 'run_date=2026-01-01'
    (day / '.staging-failed-abc').mkdir(parents=True)
    _labels_parquet(day / 'labels-00000-of-00001.parquet', 'aaaa-1111', ['/x/1.jpg'])
    _labels_parquet(day / '.staging-failed-abc' / 'labels-00000-of-00001.parquet',
                    'aaaa-1111', ['/x/2.jpg'])
    for given in (str(tmp_path / 'out' / '**' / 'labels-*.parquet'), str(tmp_path / 'out')):
        assert read_embeddings(given).uris == ['/x/1.jpg'], given


def test_embeddings_of_two_base_models_are_refused(tmp_path):
    _labels_parquet(tmp_path / 'labels-a.parquet', 'aaaa-1111', ['/x/1.jpg', '/x/2.jpg'])
    _labels_parquet(tmp_path / 'labels-b.parquet', 'bbbb-2222', ['/x/3.jpg', '/x/4.jpg'])
    (tmp_path / 'l.csv').write_text('uri,label\n/x/1.jpg,a\n/x/2.jpg,a\n/x/3.jpg,b\n/x/4.jpg,b\n')
    r = run_cli('train-head', '--embeddings', tmp_path / 'labels-*.parquet', '--labels',
                tmp_path / 'l.csv', '--output', tmp_path / 'h.keras')
    assert r.code == EXIT_USAGE and 'mixes 2 base models' in r.err
    assert r.err.strip().count('\n') == 0 and not (tmp_path / 'h.keras').exists()


@pytest.mark.parametrize('labels, message', [
    ('uri,label\n/x/1.jpg,a\n/x/2.jpg,\n', 'line 3: needs both a uri and a label'),
    ('uri,class\n/x/1.jpg,a\n', 'needs a uri and a label column'),
    ('uri,label\n/x/1.jpg,a\n/x/1.jpg,b\n', 'line 3: /x/1.jpg is labeled twice'),
    ('uri,label\n/x/1.jpg,a\n/x/2.jpg,a\n', 'only one class'),
    ('uri,label\n/x/1.jpg,a\n/x/2.jpg,a\n/x/3.jpg,b\n', "class 'b' has fewer than 2 images"),
    ('uri,label\n/y/1.jpg,a\n', 'none of the 1 labeled URIs has an embedding'),
])
def test_unusable_labels_are_one_clear_line(labels, message, tmp_path):
    _labels_parquet(tmp_path / 'labels-a.parquet', 'aaaa-1111',
                    ['/x/1.jpg', '/x/2.jpg', '/x/3.jpg'])
    (tmp_path / 'l.csv').write_text(labels)
    r = run_cli('train-head', '--embeddings', tmp_path / 'labels-*.parquet', '--labels',
                tmp_path / 'l.csv', '--output', tmp_path / 'h.keras')
    assert r.code == EXIT_USAGE and message in r.err, r.err
    assert r.err.strip().count('\n') == 0


@pytest.mark.parametrize('content', ['errors', 'not parquet'])
def test_embeddings_that_are_not_a_labels_file_are_one_clear_line(content, tmp_path):
    path = tmp_path / 'errors-00000.parquet'
    if content == 'errors':  # an errors table: a Parquet file without embeddings
        when = datetime.datetime(2026, 11, 24, tzinfo=datetime.timezone.utc)
        pq.write_table(pa.Table.from_pylist([{
            'uri': '/x/1.jpg', 'stage': 'decode', 'error': 'corrupt', 'message': 'm',
            'content_sha256': None, 'model_id': 'aaaa-1111', 'run_id': 'r',
            'processed_at': when}], schema=ERRORS_SCHEMA), path)
    else:
        path.write_bytes(b'not parquet at all')
    (tmp_path / 'l.csv').write_text('uri,label\n/x/1.jpg,a\n')
    r = run_cli('train-head', '--embeddings', path, '--labels', tmp_path / 'l.csv',
                '--output', tmp_path / 'h.keras')
    assert r.code == EXIT_USAGE and 'is not a labels Parquet file' in r.err, r.err
    assert r.err.strip().count('\n') == 0


def test_an_existing_head_is_kept_unless_overwrite(tmp_path):
    (tmp_path / 'h.keras').write_bytes(b'old')
    r = run_cli('train-head', '--embeddings', tmp_path / '*.parquet', '--labels',
                tmp_path / 'l.csv', '--output', tmp_path / 'h.keras')
    assert r.code == EXIT_USAGE and '--overwrite' in r.err
    assert (tmp_path / 'h.keras').read_bytes() == b'old'


def test_a_base_model_relabeled_over_the_same_images_is_refused_not_picked_by_path_order(
        tmp_path):
    uris = ['/x/1.jpg', '/x/2.jpg', '/x/3.jpg', '/x/4.jpg']
    _labels_parquet(tmp_path / 'labels-a.parquet', 'aaaa-1111', uris)
    _labels_parquet(tmp_path / 'labels-b.parquet', 'bbbb-2222', uris)  # same images, new model
    (tmp_path / 'l.csv').write_text('uri,label\n/x/1.jpg,a\n/x/2.jpg,a\n/x/3.jpg,b\n/x/4.jpg,b\n')
    r = run_cli('train-head', '--embeddings', tmp_path / 'labels-*.parquet', '--labels',
                tmp_path / 'l.csv', '--output', tmp_path / 'h.keras')
    assert r.code == EXIT_USAGE and 'mixes 2 base models' in r.err, r.err
    assert not (tmp_path / 'h.keras').exists()


def test_labels_written_relative_to_their_csv_match_a_folder_runs_relative_uris(
        tmp_path, monkeypatch):
    # `run --input images/` stores 'images/1.jpg'; a classes.csv beside images/ lists the
    # same files, which resolve to './images/1.jpg': one image, two spellings.
    monkeypatch.chdir(tmp_path)
    uris = [f'images/{i}.jpg' for i in range(6)]
    _labels_parquet(tmp_path / 'labels-a.parquet', 'aaaa-1111', uris)
    pathlib.Path('classes.csv').write_text(
        'uri,label\n' + ''.join(f'{u},{"ab"[i % 2]}\n' for i, u in enumerate(uris)))
    r = run_cli('train-head', '--embeddings', 'labels-*.parquet', '--labels', 'classes.csv',
                '--output', 'h.keras', '--epochs', '1', '--test_fraction', '0.34')
    assert r.code == 0, r.err
    assert r.out.startswith('6 labeled images with 4-d embeddings'), r.out
    assert json.loads(pathlib.Path('h.json').read_text())['missing_embeddings'] == []


def test_a_missing_labels_file_is_one_line_before_any_embedding_is_read(tmp_path):
    r = run_cli('train-head', '--embeddings', tmp_path / 'nothing-here-*.parquet',
                '--labels', tmp_path / 'absent.csv', '--output', tmp_path / 'h.keras')
    assert r.code == EXIT_USAGE and 'absent.csv does not exist' in r.err, r.err
    assert r.err.strip().count('\n') == 0


@pytest.mark.parametrize('bad, message', [
    (float('nan'), 'is not finite'), (float('inf'), 'is not finite'),
    (None, 'has 0 values, most have 4')])
def test_an_embedding_that_is_nan_or_missing_is_refused_naming_its_image(bad, message,
                                                                          tmp_path):
    uris = ['/x/1.jpg', '/x/2.jpg', '/x/3.jpg', '/x/4.jpg']
    path = tmp_path / 'labels-a.parquet'
    _labels_parquet(path, 'aaaa-1111', uris)
    table = pq.read_table(path).to_pylist()
    table[2]['embedding'] = None if bad is None else [1.0, bad, 1.0, 1.0]
    pq.write_table(pa.Table.from_pylist(table, schema=LABELS_SCHEMA), path)
    (tmp_path / 'l.csv').write_text('uri,label\n/x/1.jpg,a\n/x/2.jpg,a\n/x/3.jpg,b\n/x/4.jpg,b\n')
    r = run_cli('train-head', '--embeddings', path, '--labels', tmp_path / 'l.csv',
                '--output', tmp_path / 'h.keras')
    assert r.code == EXIT_USAGE and message in r.err and '/x/3.jpg' in r.err, r.err
    assert r.err.strip().count('\n') == 0 and not (tmp_path / 'h.keras').exists()


def test_training_that_diverges_saves_no_head(tmp_path):
    uris = [f'/x/{i}.jpg' for i in range(8)]
    path = tmp_path / 'labels-a.parquet'
    _labels_parquet(path, 'aaaa-1111', uris)
    table = pq.read_table(path).to_pylist()
    for i, row in enumerate(table):  # finite, but so large that the loss overflows
        row['embedding'] = [3e38 * (1 if i % 2 else -1)] * 4
    pq.write_table(pa.Table.from_pylist(table, schema=LABELS_SCHEMA), path)
    (tmp_path / 'l.csv').write_text('uri,label\n' + ''.join(
        f'{u},{"ab"[i % 2]}\n' for i, u in enumerate(uris)))
    r = run_cli('train-head', '--embeddings', path, '--labels', tmp_path / 'l.csv',
                '--output', tmp_path / 'h.keras', '--epochs', '2', '--learning_rate', '10')
    assert r.code == EXIT_USAGE and 'training diverged' in r.err, r.err
    assert not (tmp_path / 'h.keras').exists()


def test_similar_searches_a_head_runs_rows_by_their_base_models_embedding(
        trained, sample, mobilenet_v2_quant):
    root, _, report = trained
    photo = sorted(sample[2])[0]  # a held-out photo that `eval --head` labeled
    r = run_cli('similar', '--output', root / 'headed', '--image', photo, '--model',
                mobilenet_v2_quant, '--k', '2', '--format', 'json')
    assert r.code == 0, r.err
    rows = json.loads(r.out)
    assert rows[0]['uri'] == photo and rows[0]['similarity'] == pytest.approx(1.0, abs=1e-5)
    assert rows[0]['top_label'] in report['class_names']  # a head's class, not ImageNet's
    by_uri = run_cli('similar', '--output', root / 'headed', '--uri', photo, '--k', '2')
    assert by_uri.code == 0 and f'{len(sample[2])} rows of model_id' in by_uri.out, by_uri.err
