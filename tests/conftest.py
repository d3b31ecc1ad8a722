"""Shared fixtures: the pretrained assets, tiny real models, a CLI runner.

The assets (real MobileNet .tflite models, reference photos, the ImageNet sample)
live in ../shared/assets beside the checkout, never in the project. Their path
comes from IMAGELABEL_ASSETS (set by .ci/run); a missing path is a failure, not
a skip.
"""
from __future__ import annotations

import dataclasses
import io
import os
import pathlib
import sys
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_ASSETS = ROOT.parent / 'shared' / 'assets'


def assets_dir() -> pathlib.Path:
    path = pathlib.Path(os.environ.get('IMAGELABEL_ASSETS', DEFAULT_ASSETS))
    if not (path / 'models').is_dir():
        pytest.fail(f'pretrained test assets not found at {path}: set IMAGELABEL_ASSETS '
                    'to the shared/assets folder (see SOURCES.md there)')
    return path


@pytest.fixture(autouse=True, scope='module')
def _forget_loaded_models():
    """Each test module starts without the models earlier modules left in the process cache."""
    yield
    from transforms.label import forget_loaded_models
    forget_loaded_models()


@pytest.fixture(scope='session')
def assets() -> pathlib.Path:
    return assets_dir()


@pytest.fixture(scope='session')
def mobilenet_v2_quant(assets) -> pathlib.Path:
    return assets / 'models' / 'mobilenet_v2_1.0_224_quant.tflite'


@pytest.fixture(scope='session')
def grace_hopper(assets) -> pathlib.Path:
    return assets / 'images' / 'grace_hopper.jpg'


@pytest.fixture(scope='session')
def panda(assets) -> pathlib.Path:
    return assets / 'images' / 'cropped_panda.jpg'


@pytest.fixture(scope='session')
def tiny_keras_model(tmp_path_factory) -> pathlib.Path:
    """A small random-weight image classifier (1000 softmax classes) saved as .keras.

    Shaped like the real thing (conv stack, global pooling named like Inception's,
    final Dense) so every Keras code path runs, at a fraction of the cost.
    """
    import keras
    keras.utils.set_random_seed(0)
    inputs = keras.Input((64, 64, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation='relu')(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, activation='relu')(x)
    x = keras.layers.GlobalAveragePooling2D(name='avg_pool')(x)
    outputs = keras.layers.Dense(1000, activation='softmax', name='predictions')(x)
    model = keras.Model(inputs, outputs)
    path = tmp_path_factory.mktemp('models') / 'tiny.keras'
    model.save(path)
    return path


@pytest.fixture(scope='session')
def inception_keras(tmp_path_factory) -> pathlib.Path:
    """Keras Inception-v3 with random weights (real ImageNet weights need the internet)."""
    import keras
    keras.utils.set_random_seed(0)
    model = keras.applications.InceptionV3(weights=None)
    path = tmp_path_factory.mktemp('models') / 'inception_v3_random.keras'
    model.save(path)
    return path


@dataclasses.dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_cli(*args: str) -> CliResult:
    """Run `imagelabel ARGS` in-process, capturing its output and exit code."""
    from pipeline.cli import main
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # argparse's own --help exits
            code = int(e.code or 0)
    return CliResult(code, out.getvalue(), err.getvalue())


def write_jpeg(path: pathlib.Path, size=(120, 90), seed=0, **save) -> pathlib.Path:
    """A photo-like JPEG (smooth gradients + noise), deterministic per seed."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / max(w - 1, 1), yy * 255 / max(h - 1, 1),
                     np.full((h, w), rng.integers(0, 255))], axis=-1)
    img = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, format=save.pop('format', 'JPEG'), **save)
    return path


def read_parquet_rows(output_dir, prefix: str) -> list[dict]:
    """Every row of a run's labels or errors files, local or gs:// (through FileSystems)."""
    import pyarrow.parquet as pq
    from apache_beam.io.filesystems import FileSystems
    from transforms.storage import open_raw
    rows = []
    patterns = [FileSystems.join(str(output_dir), f'{prefix}-*.parquet'),  # a run's folder
                FileSystems.join(str(output_dir), 'run_date=*', f'{prefix}-*.parquet')]
    found = [m for r in FileSystems.match(patterns) for m in r.metadata_list]
    for m in sorted(found, key=lambda m: m.path):
        with open_raw(m.path) as f:
            rows.extend(pq.read_table(io.BytesIO(f.read())).to_pylist())
    return rows


sys.path.insert(0, str(ROOT))


# --- emulators: started once per session, on 127.0.0.1, stopped at the end -------------

@pytest.fixture(scope='session')
def gcs_emulator(tmp_path_factory):
    from emulators import GcsEmulator
    server = GcsEmulator(tmp_path_factory.mktemp('gcs') / 'data')
    yield server
    server.stop()


@pytest.fixture(scope='session')
def bq_emulator(tmp_path_factory, gcs_emulator):
    from emulators import BigQueryEmulator
    server = BigQueryEmulator(tmp_path_factory.mktemp('bq'), gcs_emulator)
    yield server
    server.stop()


@dataclasses.dataclass(frozen=True)
class Cloud:
    gcs: object
    bq: object
    project: str


def point_at_emulators(mp: pytest.MonkeyPatch, gcs, bq) -> Cloud:
    """The two standard settings that point a whole run at the emulators (undone by `mp`)."""
    from emulators import PROJECT
    from transforms.gcp import configure_emulators
    mp.setenv('STORAGE_EMULATOR_HOST', gcs.url)
    mp.setenv('BIGQUERY_EMULATOR_HOST', bq.url)
    mp.setenv('GOOGLE_CLOUD_PROJECT', PROJECT)
    configure_emulators()
    return Cloud(gcs, bq, PROJECT)


@pytest.fixture()
def cloud(monkeypatch, gcs_emulator, bq_emulator) -> Cloud:
    """Both emulators, with the settings in force for one test."""
    return point_at_emulators(monkeypatch, gcs_emulator, bq_emulator)


@dataclasses.dataclass(frozen=True)
class Conversion:
    """One int8 conversion the launcher made: for which runtime, on which calibration set."""
    runtime: str
    digest: str


@pytest.fixture
def conversions(monkeypatch) -> list[Conversion]:
    """The int8 conversions made while the test runs (int8.convert calls), in order."""
    from transforms.models import int8
    calls: list[Conversion] = []
    real = int8.convert

    def counting(spec, runtime, calibration, int8_runtime='litert'):
        calls.append(Conversion(int8_runtime, calibration.digest))
        return real(spec, runtime, calibration, int8_runtime)
    monkeypatch.setattr(int8, 'convert', counting)
    return calls


@pytest.fixture(scope='module')
def int8_photos(tmp_path_factory) -> pathlib.Path:
    """12 small generated photos: enough to calibrate, check agreement and label (int8 tests)."""
    folder = tmp_path_factory.mktemp('photos')
    for i in range(12):
        write_jpeg(folder / f'{i:02d}.jpg', size=(96, 80), seed=i)
    return folder


def dense_classifier(tmp_path, activation: str, *, saved_model: bool):
    """A small classifier with a final Dense of `activation`, as a .keras file or SavedModel."""
    import keras
    keras.utils.set_random_seed(2)
    inputs = keras.Input((64, 64, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation='relu')(inputs)
    x = keras.layers.GlobalAveragePooling2D(name='avg_pool')(x)
    # Logits spread out by the bias: one softmax and two are far apart, so a miscount
    # shows; and they vary little from image to image, so int8's calibration covers them.
    scores = keras.layers.Dense(1000, activation=activation, name='predictions',
                                bias_initializer=keras.initializers.RandomNormal(stddev=2.0))(x)
    model = keras.Model(inputs, scores)
    if not saved_model:
        path = tmp_path / f'{activation}.keras'
        model.save(path)
        return path
    path = tmp_path / f'{activation}_saved'
    model.export(str(path), verbose=False)
    return path


def int8_run(model, photos, out, cache, *extra) -> CliResult:
    """`imagelabel run --precision int8` on few images, gate off: the mechanics, not agreement."""
    return run_cli('run', '--input', photos, '--output', out, '--model', model,
                   '--precision', 'int8', '--model_cache', cache, '--min_agreement', '0',
                   '--calibration_images', '6', '--agreement_images', '4', *extra)
