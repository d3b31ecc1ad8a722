"""One model per machine: --share_model / --model_copies reach Beam's shared-model API.

Beam's RunInference asks the handler `share_model_across_processes()` and
`model_copies()`; when sharing, the model lives in one process and every SDK
process calls it through a multiprocessing proxy, which forwards method calls
only. These tests check the flags, the two answers, that our handler works
through Beam's proxy, and that a two-process run with a shared model labels
exactly what a one-process run labels. Memory is measured by
bench/shared_model_rss.py, not here.
"""
from __future__ import annotations

import uuid

import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.utils.multi_process_shared import MultiProcessShared

from conftest import read_parquet_rows, run_cli, write_jpeg
from pipeline.options import settings_from
from transforms.decode import DecodedImage
from transforms.label import ImageModelHandler, ImageScores
from transforms.models import resolve_spec


def handler_for(model_path, **kwargs) -> ImageModelHandler:
    return ImageModelHandler(resolve_spec(str(model_path)), batch_size=4, **kwargs)


def test_without_the_flags_each_process_loads_its_own_model(tiny_keras_model):
    handler = handler_for(tiny_keras_model)
    assert handler.share_model_across_processes() is False
    assert handler.model_copies() == 1


def test_share_model_asks_beam_for_one_model_per_machine(tiny_keras_model):
    handler = handler_for(tiny_keras_model, share_model=True)
    assert handler.share_model_across_processes() is True
    assert handler.model_copies() == 1


def test_model_copies_implies_sharing_and_sets_how_many(tiny_keras_model):
    handler = handler_for(tiny_keras_model, model_copies=3)
    assert handler.share_model_across_processes() is True
    assert handler.model_copies() == 3


@pytest.mark.parametrize('flags, share, copies', [
    ([], False, None),
    (['--share_model'], True, None),
    (['--model_copies', '2'], True, 2),
    (['--share_model', '--model_copies', '2'], True, 2),
])
def test_the_flags_become_settings(flags, share, copies):
    s = settings_from(PipelineOptions(['--input', 'photos/', *flags]))
    assert (s.share_model, s.model_copies) == (share, copies)


def test_zero_model_copies_is_refused_at_launch_with_one_line(tmp_path, tiny_keras_model):
    write_jpeg(tmp_path / 'in' / 'a.jpg')
    r = run_cli('run', '--input', tmp_path / 'in', '--output', tmp_path / 'out',
                '--model', tiny_keras_model, '--model_copies', '0')
    assert r.code == 2
    assert r.err.strip().splitlines() == [
        'imagelabel: error: --model_copies must be a positive integer, got 0 '
        '(leave it out for one model per process)']


def decoded(n: int) -> list[DecodedImage]:
    rng = np.random.default_rng(0)
    return [DecodedImage(f'mem://{i}.jpg', f'{i:064x}', 64, 64,
                         rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for i in range(n)]


def test_the_handler_labels_through_beams_cross_process_proxy(tiny_keras_model):
    """What RunInference does with share_model: acquire the model as a proxy, call it."""
    handler = handler_for(tiny_keras_model, share_model=True)
    direct = handler.run_inference(decoded(4), handler.load_model())
    shared = MultiProcessShared(handler.load_model, tag=f'imagelabel-test-{uuid.uuid4().hex}',
                                always_proxy=True)
    proxy = shared.acquire()
    try:
        via_proxy = handler.run_inference(decoded(4), proxy)
    finally:
        shared.release(proxy)
    assert [r.model_id for r in via_proxy] == [r.model_id for r in direct]
    assert all(isinstance(r.inference, ImageScores) for r in via_proxy)
    for a, b in zip(direct, via_proxy):
        assert a.example == b.example
        np.testing.assert_array_equal(a.inference.probabilities, b.inference.probabilities)
        np.testing.assert_array_equal(a.inference.embedding, b.inference.embedding)


def test_two_processes_sharing_one_model_label_what_one_process_labels(tmp_path,
                                                                       tiny_keras_model):
    for i in range(12):
        write_jpeg(tmp_path / 'in' / f'{i:02d}.jpg', seed=i)
    common = ['--input', tmp_path / 'in', '--model', tiny_keras_model, '--batch_size', '4',
              '--run_id', 'fixed']
    one = run_cli('run', *common, '--output', tmp_path / 'one')
    assert one.code == 0, one.err
    two = run_cli('run', *common, '--output', tmp_path / 'two', '--share_model',
                  '--direct_running_mode=multi_processing', '--direct_num_workers=2')
    assert two.code == 0, two.err

    def by_uri(folder):
        return {r['uri']: r for r in read_parquet_rows(folder, 'labels')}

    single, shared = by_uri(tmp_path / 'one'), by_uri(tmp_path / 'two')
    assert len(single) == 12
    assert shared.keys() == single.keys()
    # Keras batches have fixed shapes; which images share a batch may change the last bits.
    for uri, row in single.items():
        other = shared[uri]
        assert other['model_id'] == row['model_id']
        assert [l['index'] for l in other['labels']] == [l['index'] for l in row['labels']]
        np.testing.assert_allclose([l['score'] for l in other['labels']],
                                   [l['score'] for l in row['labels']], rtol=1e-5)
        np.testing.assert_allclose(other['embedding'], row['embedding'], rtol=1e-5, atol=1e-6)
    assert read_parquet_rows(tmp_path / 'two', 'errors') == []


def test_a_labels_file_edited_in_place_is_a_new_load_not_the_old_names(tiny_keras_model,
                                                                       tmp_path):
    import os
    from transforms.label import forget_loaded_models, shared_labeled_model
    labels = tmp_path / 'labels.txt'
    labels.write_text('\n'.join(f'old{i}' for i in range(1000)))
    spec = resolve_spec(str(tiny_keras_model), labels=str(labels))
    settings = dict(batch_size=2, precision='float32', threads=None, recipe='crop')
    forget_loaded_models()
    try:
        before = shared_labeled_model(spec, **settings)
        labels.write_text('\n'.join(f'new{i}' for i in range(1000)))
        os.utime(labels, (1_000_000_000, 1_000_000_000))  # same size: the time tells
        after = shared_labeled_model(spec, **settings)
    finally:
        forget_loaded_models()
    assert before.labels[0] == 'old0' and after.labels[0] == 'new0'
    assert before.model_id != after.model_id
