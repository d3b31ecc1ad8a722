"""Model registry, preprocessing, label set and the Keras / LiteRT runtimes."""
import json

import keras
import numpy as np
import pytest

from transforms import models
from transforms.label import load_labeled_model
from transforms.models import PREPROCESSORS, load_labels, resolve_spec


@pytest.mark.parametrize('mode, keras_fn', [
    ('inception', keras.applications.inception_v3.preprocess_input),
    ('inception', keras.applications.mobilenet_v2.preprocess_input),
    ('caffe', keras.applications.resnet50.preprocess_input),
    ('torch', keras.applications.densenet.preprocess_input),
])
def test_preprocessing_matches_keras_preprocess_input(mode, keras_fn):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (2, 8, 8, 3)).astype(np.float32)
    ours = PREPROCESSORS[mode](pixels.copy())
    theirs = keras_fn(pixels.copy())
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-4)


def test_inception_preprocessing_spans_minus_one_to_one():
    out = PREPROCESSORS['inception'](np.array([0.0, 127.5, 255.0]))
    np.testing.assert_allclose(out, [-1, 0, 1])


def test_bundled_labels_match_keras_class_index(assets):
    names = load_labels()
    index = json.loads((assets / 'imagenet_class_index.json').read_text())
    assert len(names) == 1000
    assert [n.replace(' ', '_') for n in names] == [index[str(i)][1] for i in range(1000)]
    assert names[652] == 'military uniform' and names[388] == 'giant panda'


def test_user_labels_file_overrides(tmp_path):
    f = tmp_path / 'labels.txt'
    f.write_text('cat\ndog\n\n')
    assert load_labels(str(f)) == ['cat', 'dog']


def test_unknown_model_name_says_what_is_known():
    with pytest.raises(ValueError, match='inception_v3'):
        resolve_spec('inceptoin_v3')


def test_registry_describes_inception_v3_as_data():
    spec = resolve_spec('inception_v3')
    assert (spec.input_size, spec.preprocess, spec.embedding_layer) == ((299, 299), 'inception', 'avg_pool')


def test_weights_flag_only_for_named_models(mobilenet_v2_quant):
    with pytest.raises(ValueError, match='--weights'):
        resolve_spec(str(mobilenet_v2_quant), weights='w.h5')


def _scores_model(tmp_path, name, top):
    """A 10-class model over 32x32 images: conv, pooling to an 8-d embedding, then `top`."""
    inp = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, activation='relu')(inp)
    emb = keras.layers.GlobalAveragePooling2D(name='avg_pool')(x)
    model = keras.Model(inp, top(emb))
    path = tmp_path / f'{name}.keras'
    model.save(path)
    return path, model


@pytest.mark.parametrize('name, top', [
    # a softmax Dense, then a Reshape: still probabilities, not softmaxed again
    ('reshaped', lambda e: keras.layers.Reshape((10,))(keras.layers.Dense(10, 'softmax')(e))),
    # two outputs, the classes first and a box head after them
    ('with_box', lambda e: [keras.layers.Dense(10, 'softmax')(e), keras.layers.Dense(4)(e)]),
    ('logits', lambda e: keras.layers.Dense(10)(e)),
])
def test_the_scores_are_the_first_outputs_probabilities_whatever_layers_follow(tmp_path, name,
                                                                              top):
    path, k = _scores_model(tmp_path, name, top)
    labels = tmp_path / 'labels.txt'
    labels.write_text('\n'.join(f'c{i}' for i in range(10)))
    spec = resolve_spec(str(path), labels=str(labels))
    model = load_labeled_model(spec, batch_size=2, precision='float32', threads=None,
                               recipe='crop')
    pixels = np.random.default_rng(2).integers(0, 256, (2, 32, 32, 3)).astype(np.uint8)
    probs, emb = model.predict(pixels)
    x = pixels.astype(np.float32) / 127.5 - 1
    expected = k.predict(x, verbose=0)
    expected = expected[0] if isinstance(expected, list) else expected
    if name == 'logits':
        expected = np.exp(expected) / np.exp(expected).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probs, expected, rtol=1e-4, atol=1e-6)
    pool = keras.Model(k.inputs, k.get_layer('avg_pool').output)
    np.testing.assert_allclose(emb, pool.predict(x, verbose=0), rtol=1e-4, atol=1e-5)


def test_bucket_sizes_bound_the_number_of_traced_shapes():
    sizes = {models.bucket_size(n, 32) for n in range(1, 33)}
    assert sizes == {1, 2, 4, 8, 16, 32}
    assert models.bucket_size(3, 32) == 4 and models.bucket_size(20, 32) == 32


def test_keras_runtime_gives_probabilities_and_embedding_from_one_pass(tiny_keras_model):
    spec = resolve_spec(str(tiny_keras_model))
    model = load_labeled_model(spec, batch_size=4, precision='float32', threads=None, recipe='crop')
    assert model.runtime.input_size == (64, 64)
    assert model.runtime.output_kind == 'probabilities'
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (3, 64, 64, 3)).astype(np.uint8)
    probs, emb = model.predict(pixels)
    assert probs.shape == (3, 1000) and emb.shape == (3, 16)
    # Same numbers as the plain Keras model and its avg_pool layer on preprocessed input.
    k = keras.models.load_model(tiny_keras_model)
    x = pixels.astype(np.float32) / 127.5 - 1
    np.testing.assert_allclose(probs, k.predict(x, verbose=0), rtol=1e-4, atol=1e-6)
    pool = keras.Model(k.inputs, k.get_layer('avg_pool').output)
    np.testing.assert_allclose(emb, pool.predict(x, verbose=0), rtol=1e-4, atol=1e-5)


def test_keras_runtime_padding_does_not_change_results(tiny_keras_model):
    spec = resolve_spec(str(tiny_keras_model))
    model = load_labeled_model(spec, batch_size=8, precision='float32', threads=None, recipe='crop')
    pixels = np.random.default_rng(2).integers(0, 256, (5, 64, 64, 3)).astype(np.uint8)
    together, _ = model.predict(pixels)
    alone = np.concatenate([model.predict(pixels[i:i + 1])[0] for i in range(5)])
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-7)


def test_logits_model_is_detected_and_softmaxed(tmp_path):
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    model = keras.Model(inputs, keras.layers.Dense(10)(x))  # no softmax: logits
    path = tmp_path / 'logits.keras'
    model.save(path)
    labels = tmp_path / 'labels.txt'
    labels.write_text('\n'.join(f'c{i}' for i in range(10)))
    loaded = load_labeled_model(resolve_spec(str(path), labels=str(labels)), batch_size=2,
                                precision='float32', threads=None, recipe='crop')
    assert loaded.runtime.output_kind == 'logits'
    probs, emb = loaded.predict(np.full((2, 32, 32, 3), 200, np.uint8))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert emb.shape == (2, 3)


def test_label_count_mismatch_is_a_clear_error(tiny_keras_model, tmp_path):
    labels = tmp_path / 'three.txt'
    labels.write_text('a\nb\nc\n')
    with pytest.raises(ValueError, match='1000 outputs but the label set has 3'):
        load_labeled_model(resolve_spec(str(tiny_keras_model), labels=str(labels)),
                           batch_size=1, precision='float32', threads=None, recipe='crop')


@pytest.mark.parametrize('name, dim, kind', [
    ('mobilenet_v2_1.0_224_quant.tflite', 1280, 'logits'),
    ('mobilenet_v1_0.25_224_quant.tflite', 256, 'probabilities'),
    ('mobilenet_v1_0.25_224_1_default_1.tflite', 256, 'probabilities'),
])
def test_tflite_assets_expose_their_penultimate_layer(assets, name, dim, kind):
    model = load_labeled_model(resolve_spec(str(assets / 'models' / name)), batch_size=2,
                               precision='float32', threads=None, recipe='plain')
    assert model.drop_background and model.num_classes == 1000
    assert model.runtime.output_kind == kind and model.runtime.embedding_dim == dim
    probs, emb = model.predict(np.random.default_rng(3).integers(0, 256, (2, 224, 224, 3)).astype(np.uint8))
    assert probs.shape == (2, 1000) and emb.shape == (2, dim)
    assert np.all(emb >= 0)  # post-ReLU average pool


def test_bad_model_file_fails_with_one_line(tmp_path):
    bad = tmp_path / 'not_a_model.tflite'
    bad.write_bytes(b'hello')
    with pytest.raises(ValueError, match='not a loadable TFLite model'):
        load_labeled_model(resolve_spec(str(bad)), batch_size=1, precision='float32',
                           threads=None, recipe='crop')


def test_model_id_changes_with_weights_and_settings(tiny_keras_model, tmp_path):
    spec = resolve_spec(str(tiny_keras_model))
    a = load_labeled_model(spec, batch_size=1, precision='float32', threads=None, recipe='crop')
    b = load_labeled_model(spec, batch_size=1, precision='float32', threads=None, recipe='plain')
    again = load_labeled_model(spec, batch_size=1, precision='float32', threads=None, recipe='crop')
    assert a.model_id == again.model_id and a.model_id != b.model_id
    k = keras.models.load_model(tiny_keras_model)
    k.layers[-1].set_weights([w + 1 for w in k.layers[-1].get_weights()])
    other = tmp_path / 'other.keras'
    k.save(other)
    c = load_labeled_model(resolve_spec(str(other)), batch_size=1, precision='float32',
                           threads=None, recipe='crop')
    assert c.model_id.split('-')[0] != a.model_id.split('-')[0]


def test_bf16_changes_numbers_slightly_where_the_cpu_has_bf16_units_and_never_touches_float32(
        tiny_keras_model):
    from transforms.cpu import this_cpu
    spec = resolve_spec(str(tiny_keras_model))
    pixels = np.random.default_rng(4).integers(0, 256, (4, 64, 64, 3)).astype(np.uint8)
    fp32 = load_labeled_model(spec, batch_size=4, precision='float32', threads=None, recipe='crop')
    before, emb32 = fp32.predict(pixels)
    bf16 = load_labeled_model(spec, batch_size=4, precision='bf16', threads=None, recipe='crop')
    probs16, emb16 = bf16.predict(pixels)
    after, _ = fp32.predict(pixels)
    np.testing.assert_array_equal(before, after)  # the bf16 switch did not leak
    if not this_cpu().has_bf16:
        # No bf16 units (AVX2-only Zen 3): oneDNN would not rewrite the graph, so the
        # run says it is float32; its model_id is bf16's all the same, the one a worker
        # with bf16 units computes for the same job.
        assert bf16.runtime.precision == 'float32'
        np.testing.assert_array_equal(emb16, emb32)
        assert bf16.model_id != fp32.model_id
        return
    assert bf16.runtime.precision == 'bf16'
    rel = np.abs(emb16 - emb32).max() / np.abs(emb32).max()
    assert 1e-5 < rel < 0.05, rel  # really bf16 (8-bit mantissa), still the same model
    assert bf16.model_id != fp32.model_id
    # The classifier head runs in float32: scores keep more than bf16's 8-bit mantissa,
    # so close scores are not tied by rounding.
    low_bits = probs16.astype(np.float32).view(np.uint32) & 0xFFFF
    assert np.count_nonzero(low_bits) > 0.9 * low_bits.size


def test_a_bf16_job_has_one_model_id_whether_or_not_the_cpu_loading_it_has_bf16_units(
        tiny_keras_model, monkeypatch):
    # A launcher without bf16 units (float32) and Sapphire Rapids workers (bf16) run the same
    # job: each worker checks that it computes the launcher's model_id.
    from transforms.cpu import parse_cpuinfo
    from transforms.models import keras as keras_runtime
    spec = resolve_spec(str(tiny_keras_model))
    loaded = {}
    for name, flags in (('zen3', 'avx2 fma'), ('sapphire', 'avx2 avx512f amx_bf16 amx_tile')):
        cpu = parse_cpuinfo(f'processor: 0\nmodel name: {name}\nflags: {flags}\n')
        monkeypatch.setattr(keras_runtime, 'this_cpu', lambda cpu=cpu: cpu)
        loaded[name] = load_labeled_model(spec, batch_size=2, precision='bf16', threads=None,
                                          recipe='crop')
    assert loaded['zen3'].runtime.precision == 'float32'
    assert loaded['sapphire'].runtime.precision == 'bf16'
    assert loaded['zen3'].model_id == loaded['sapphire'].model_id


def test_saved_model_directory_runs_its_serving_signature(tiny_keras_model, tmp_path):
    k = keras.models.load_model(tiny_keras_model)
    export_dir = tmp_path / 'saved'
    k.export(str(export_dir), verbose=False)
    spec = resolve_spec(str(export_dir))
    assert spec.format == 'saved_model'
    model = load_labeled_model(spec, batch_size=2, precision='float32', threads=None, recipe='crop')
    assert model.runtime.input_size == (64, 64) and model.num_classes == 1000
    pixels = np.random.default_rng(5).integers(0, 256, (2, 64, 64, 3)).astype(np.uint8)
    probs, emb = model.predict(pixels)
    expected = k.predict(pixels.astype(np.float32) / 127.5 - 1, verbose=0)
    np.testing.assert_allclose(probs, expected, rtol=1e-4, atol=1e-6)
    assert emb.shape == (2, 0)  # the signature exposes no embedding
    assert len(model.model_id) > 16


def test_named_inception_v3_loads_weights_from_a_file(tmp_path):
    keras.utils.set_random_seed(1)
    weights = tmp_path / 'inception_v3.weights.h5'
    reference = keras.applications.InceptionV3(weights=None)
    reference.save_weights(weights)
    spec = resolve_spec('inception_v3', weights=str(weights))
    from transforms.models.keras import load_keras_model
    loaded, _ = load_keras_model(spec)  # every variable set from the file, none left unset
    for ours, stored in zip(loaded.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, stored)
    model = load_labeled_model(spec, batch_size=2, precision='float32', threads=None, recipe='crop')
    assert model.runtime.input_size == (299, 299) and model.runtime.embedding_dim == 2048
    assert model.runtime.output_kind == 'probabilities' and model.num_classes == 1000
    probs, emb = model.predict(np.full((1, 299, 299, 3), 128, np.uint8))
    assert probs.shape == (1, 1000) and emb.shape == (1, 2048)
    from transforms.models import file_fingerprint
    assert model.model_id.startswith(file_fingerprint(str(weights))[:16])


def _labels_file(tmp_path, n):
    path = tmp_path / f'labels{n}.txt'
    path.write_text('\n'.join(f'class {i}' for i in range(n)))
    return str(path)


def test_one_extra_output_is_only_a_background_class_for_imagenet(tmp_path):
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    path = tmp_path / 'eleven.keras'
    keras.Model(inputs, keras.layers.Dense(11, activation='softmax')(x)).save(path)
    with pytest.raises(ValueError, match='11 outputs but the label set has 10'):
        load_labeled_model(resolve_spec(str(path), labels=_labels_file(tmp_path, 10)),
                           batch_size=1, precision='float32', threads=None, recipe='crop')


def test_saved_model_picks_scores_and_embedding_by_width(tmp_path):
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3)(inputs)
    emb = keras.layers.GlobalAveragePooling2D()(x)
    emb = keras.layers.Dense(24, name='features')(emb)  # wider than the 10 classes
    probs = keras.layers.Dense(10, activation='softmax')(emb)
    k = keras.Model(inputs, {'probs': probs, 'features': emb})
    k.export(str(tmp_path / 'sm'), verbose=False)
    model = load_labeled_model(resolve_spec(str(tmp_path / 'sm'), labels=_labels_file(tmp_path, 10)),
                               batch_size=2, precision='float32', threads=None, recipe='crop')
    assert model.runtime.output_kind == 'probabilities' and model.runtime.embedding_dim == 24
    pixels = np.random.default_rng(6).integers(0, 256, (2, 32, 32, 3)).astype(np.uint8)
    scores = model.predict(pixels)
    expected = k.predict(pixels.astype(np.float32) / 127.5 - 1, verbose=0)
    np.testing.assert_allclose(scores.probabilities, expected['probs'], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(scores.embeddings, expected['features'], rtol=1e-4, atol=1e-5)


def test_int8_tflite_input_is_quantized_with_its_own_parameters(tiny_keras_model, tmp_path):
    import tensorflow as tf
    k = keras.models.load_model(tiny_keras_model)
    rng = np.random.default_rng(7)

    def representative():
        for _ in range(8):
            yield [rng.uniform(-1, 1, (1, 64, 64, 3)).astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(k)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    path = tmp_path / 'tiny_int8.tflite'
    path.write_bytes(converter.convert())
    model = load_labeled_model(resolve_spec(str(path)), batch_size=2, precision='float32',
                               threads=1, recipe='crop')
    pixels = rng.integers(0, 256, (2, 64, 64, 3)).astype(np.uint8)
    got = model.predict(pixels)
    pool = keras.Model(k.inputs, k.get_layer('avg_pool').output)
    want = pool.predict(pixels.astype(np.float32) / 127.5 - 1, verbose=0)
    # Only int8 rounding separates the two (fed garbage, the correlation would collapse).
    # (The softmax scores of this random model, ~0.001 each, are below int8's output step.)
    assert got.embeddings.shape == (2, 16)
    assert np.corrcoef(got.embeddings.ravel(), want.ravel())[0, 1] > 0.99
    assert np.abs(got.embeddings - want).max() < 0.05 * np.abs(want).max()


def test_nan_outputs_become_model_error_rows(tiny_keras_model):
    from transforms.decode import DecodedImage
    from transforms.errors import Failure
    from transforms.label import _checked
    images = [DecodedImage('ok', 'h1', 1, 1, np.zeros((1, 1, 3), np.uint8)),
              DecodedImage('nan', 'h2', 1, 1, np.zeros((1, 1, 3), np.uint8))]
    ok = _checked(images[0], np.array([0.5, 0.5]), np.ones(2))
    bad = _checked(images[1], np.array([np.nan, 0.5]), np.ones(2))
    assert not isinstance(ok, Failure)
    assert isinstance(bad, Failure) and (bad.stage, bad.error, bad.uri) == ('inference', 'model_error', 'nan')


def test_bf16_calls_on_one_thread_leave_float32_calls_on_another_exact(tiny_keras_model):
    import threading
    spec = resolve_spec(str(tiny_keras_model))
    pixels = np.random.default_rng(8).integers(0, 256, (4, 64, 64, 3)).astype(np.uint8)
    fp32 = load_labeled_model(spec, batch_size=4, precision='float32', threads=None, recipe='crop')
    bf16 = load_labeled_model(spec, batch_size=4, precision='bf16', threads=None, recipe='crop')
    reference = fp32.predict(pixels).embeddings
    stop, mismatches = threading.Event(), []

    def bf16_loop():
        while not stop.is_set():
            bf16.predict(pixels)

    worker = threading.Thread(target=bf16_loop)
    worker.start()
    try:
        for _ in range(20):
            if not np.array_equal(fp32.predict(pixels).embeddings, reference):
                mismatches.append(1)
    finally:
        stop.set()
        worker.join()
    assert not mismatches


def test_a_keras_file_loads_its_stored_weights_while_new_layers_still_start_random(
        tiny_keras_model):
    from keras.src.backend.tensorflow.core import Variable

    from transforms.models.keras import load_keras_model
    from tensorflow.python.ops import resource_variable_ops
    # What the load replaces for a moment: if Keras or TensorFlow renamed them, the
    # savings are gone (the load still works, the ordinary way).
    assert callable(getattr(Variable, '_initialize_with_initializer', None))
    assert callable(getattr(resource_variable_ops.gen_resource_variable_ops, 'var_handle_op',
                            None))
    model, _ = load_keras_model(resolve_spec(str(tiny_keras_model)))
    plain = keras.models.load_model(tiny_keras_model, compile=False)
    for ours, theirs in zip(model.get_weights(), plain.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert all(np.abs(w).sum() > 0 for w in model.get_weights()[::2])  # kernels: stored, not 0
    fresh = keras.layers.Dense(4)  # created after the load: Keras's random start again
    fresh.build((None, 3))
    assert np.abs(fresh.kernel.numpy()).sum() > 0


def test_quick_variables_change_only_the_loading_thread_and_only_while_it_loads():
    import threading

    from keras.src.backend.tensorflow.core import Variable
    from tensorflow.python.ops import resource_variable_ops

    from transforms.models.keras import quick_variables
    ops = resource_variable_ops.gen_resource_variable_ops
    before = (Variable.__dict__['_initialize_with_initializer'], ops.var_handle_op)

    def new(name):
        return keras.Variable(initializer='random_normal', shape=(64,), name=name)

    others = {}
    with quick_variables():
        loading, stored = new('loading_one'), new('stored_one')
        inside = bool(loading.value.is_initialized()), repr(loading.value.handle)
        stored.assign(np.arange(64, dtype=np.float32))  # what the load does
        worker = threading.Thread(target=lambda: others.update(other=new('other_one')))
        worker.start()
        worker.join()
    # The loading thread's variables start unset, their handles without a debug name
    # (so they share one kernel); another thread's start random and keep their names.
    assert inside[0] is False and 'loading_one' not in inside[1]
    assert others['other'].numpy().any() and 'other_one' in repr(others['other'].value.handle)
    # After the load: a variable it set keeps that value; one it left unset starts the
    # ordinary way (a random draw).
    np.testing.assert_array_equal(stored.numpy(), np.arange(64))
    assert loading.value.is_initialized() and np.unique(loading.numpy()).size == 64
    assert (Variable.__dict__['_initialize_with_initializer'], ops.var_handle_op) == before
    later = new('later_one')  # after the load: the ordinary way again
    assert later.numpy().any() and 'later_one' in repr(later.value.handle)


def test_variables_a_keras_file_does_not_hold_start_the_ordinary_way(tmp_path):
    from transforms.models.keras import load_keras_model
    # Seed generators' states (RandomFlip, Dropout) are variables no file holds: the load
    # leaves them unset, so they get their ordinary start after it.
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.RandomFlip(seed=7)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(x))
    outputs = keras.layers.Dense(3, activation='softmax')(keras.layers.Dropout(0.5, seed=9)(x))
    keras.Model(inputs, outputs).save(tmp_path / 'seeded.keras')
    ours, _ = load_keras_model(resolve_spec(str(tmp_path / 'seeded.keras')))
    plain = keras.models.load_model(tmp_path / 'seeded.keras', compile=False)
    assert all(v.value.is_initialized() for v in ours.variables)
    states = [v for v in ours.variables if 'seed_generator_state' in v.path]
    assert len(states) == 2
    for mine, theirs in zip(ours.variables, plain.variables, strict=True):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())  # seeds [7, 0] and [9, 0]


def test_a_model_whose_layers_read_their_variables_while_built_loads_the_ordinary_way(
        tmp_path, caplog):
    from transforms.models.keras import load_keras_model
    # An adapted Normalization computes its mean and variance from its variables when it
    # is built, before the load sets them (EfficientNet has one): unset variables cannot
    # serve it, so the load falls back to the ordinary way and still gives the file's model.
    norm = keras.layers.Normalization()
    norm.adapt(np.random.default_rng(0).normal(3.0, 2.0, size=(64, 8, 8, 3)).astype('float32'))
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(norm(inputs)))
    keras.Model(inputs, keras.layers.Dense(3, activation='softmax')(x)).save(
        tmp_path / 'normalized.keras')
    with caplog.at_level('INFO', logger='imagelabel.models'):
        ours, _ = load_keras_model(resolve_spec(str(tmp_path / 'normalized.keras')))
    assert 'loading again without quick variable creation' in caplog.text
    plain = keras.models.load_model(tmp_path / 'normalized.keras', compile=False)
    x = np.random.default_rng(1).normal(3.0, 2.0, size=(2, 8, 8, 3)).astype('float32')
    np.testing.assert_allclose(ours.predict(x, verbose=0), plain.predict(x, verbose=0),
                               rtol=1e-6)


def test_a_keras_file_missing_a_stored_weight_fails_instead_of_leaving_it_unset(tmp_path):
    import zipfile
    deeper = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name='a'),
                               keras.layers.Dense(2, name='b')])
    shallower = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name='a')])
    deeper.save(tmp_path / 'deeper.keras')
    shallower.save(tmp_path / 'shallower.keras')
    # The deeper model's architecture with the shallower one's weights: 'b' has none.
    with zipfile.ZipFile(tmp_path / 'deeper.keras') as d, \
            zipfile.ZipFile(tmp_path / 'shallower.keras') as s, \
            zipfile.ZipFile(tmp_path / 'broken.keras', 'w') as out:
        for name in d.namelist():
            out.writestr(name, (s if name.endswith('.h5') else d).read(name))
    with pytest.raises(ValueError, match='not a loadable Keras model') as e:
        models.load_runtime(resolve_spec(str(tmp_path / 'broken.keras')))
    assert 'could not be loaded' in str(e.value)


def test_a_batch_given_as_separate_images_scores_as_the_stacked_batch(tiny_keras_model,
                                                                        mobilenet_v2_quant):
    # run_inference hands runtimes the decoded images as they are: the per-image
    # runtimes never copy them into one array, the batch runtimes stack them.
    rng = np.random.default_rng(0)
    for path, size in ((tiny_keras_model, 64), (mobilenet_v2_quant, 224)):
        runtime = models.load_runtime(resolve_spec(str(path)), batch_size=4)
        images = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(3)]
        separate, stacked = runtime.predict(images), runtime.predict(np.stack(images))
        np.testing.assert_array_equal(separate.probabilities, stacked.probabilities)
        np.testing.assert_array_equal(separate.embeddings, stacked.embeddings)
        assert separate.probabilities.shape[0] == 3


def test_a_named_model_whose_weights_cannot_be_downloaded_is_one_line(monkeypatch):
    # A Dataflow worker without internet egress; no request leaves this machine here.
    from keras.src.utils import file_utils
    from transforms.models import keras as keras_runtime

    fetched = []

    def offline(fname, origin=None, **_):
        fetched.append(origin)
        raise Exception(f'URL fetch failure on {origin}: None -- [Errno 101] Network is '
                        'unreachable')
    monkeypatch.setattr(file_utils, 'get_file', offline)
    with pytest.raises(ValueError) as e:
        keras_runtime.load_keras_model(resolve_spec("mobilenet_v2"))
    assert str(e.value) == (
        '--model mobilenet_v2: cannot download its ImageNet weights ([Errno 101] Network is '
        'unreachable); on a machine without internet access, pass --weights with a local or '
        'gs:// copy of the weights file')
    assert len(fetched) == 1  # tried once: each try waits out a network timeout
