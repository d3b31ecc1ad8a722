"""Real runs for the report, drift and similar tests: the real pipeline, cheaply.

The quantized MobileNetV2 runs ~100 images/s here, so each run below (a few
tens of ImageNet sample photos) costs seconds. Import the fixtures into a test
module to use them.
"""
from __future__ import annotations

import pathlib
import shutil

import pytest

from conftest import run_cli

HOSTILE_NAME = '<img src=x onerror=alert(1)>.jpg'
FISH = ['n01440764_tench', 'n01443537_goldfish', 'n01484850_great_white_shark',
        'n01491361_tiger_shark', 'n01494475_hammerhead', 'n01496331_electric_ray',
        'n01498041_stingray', 'n02514041_barracouta', 'n02526121_eel', 'n02536864_coho',
        'n02606052_rock_beauty', 'n02607072_anemone_fish', 'n02640242_sturgeon',
        'n02641379_gar', 'n02643566_lionfish', 'n02655020_puffer']
VEHICLES = ['n02701002_ambulance', 'n02814533_beach_wagon', 'n02930766_cab',
            'n03100240_convertible', 'n03345487_fire_engine', 'n03417042_garbage_truck',
            'n03594945_jeep', 'n03670208_limousine', 'n03770679_minivan',
            'n03796401_moving_van', 'n03930630_pickup', 'n03977966_police_van',
            'n04037443_racer', 'n04146614_school_bus', 'n04285008_sports_car',
            'n04461696_tow_truck', 'n04465501_tractor', 'n04487081_trolleybus']


def copy_photos(assets: pathlib.Path, names: list[str], folder: pathlib.Path) -> pathlib.Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(assets / 'imagenet_sample' / 'images' / f'{name}.JPEG',
                        folder / f'{name}.JPEG')
    return folder


def label_run(input_dir: pathlib.Path, output: pathlib.Path, model: pathlib.Path) -> pathlib.Path:
    result = run_cli('run', '--input', input_dir, '--output', output, '--model', model)
    assert result.code == 0, result.err
    return output


@pytest.fixture(scope='session')
def mixed_photos(assets, tmp_path_factory) -> pathlib.Path:
    """Fish and vehicles, an exact copy of one photo under another name, a file that is
    not an image, and a real JPEG with a hostile name."""
    folder = copy_photos(assets, FISH[:5] + VEHICLES[:5], tmp_path_factory.mktemp('mixed'))
    shutil.copyfile(folder / 'n01443537_goldfish.JPEG', folder / 'copy_of_goldfish.jpg')
    shutil.copyfile(folder / 'n02701002_ambulance.JPEG', folder / HOSTILE_NAME)
    (folder / 'broken.jpg').write_bytes(b'this is not an image, whatever its name says')
    return folder


@pytest.fixture(scope='session')
def mixed_run(mixed_photos, mobilenet_v2_quant, tmp_path_factory) -> pathlib.Path:
    return label_run(mixed_photos, tmp_path_factory.mktemp('mixed_out') / 'out',
                     mobilenet_v2_quant)


@pytest.fixture(scope='session')
def fish_run(assets, mobilenet_v2_quant, tmp_path_factory) -> pathlib.Path:
    photos = copy_photos(assets, FISH, tmp_path_factory.mktemp('fish'))
    return label_run(photos, tmp_path_factory.mktemp('fish_out') / 'out', mobilenet_v2_quant)


@pytest.fixture(scope='session')
def vehicle_run(assets, mobilenet_v2_quant, tmp_path_factory) -> pathlib.Path:
    photos = copy_photos(assets, VEHICLES, tmp_path_factory.mktemp('vehicles'))
    return label_run(photos, tmp_path_factory.mktemp('vehicle_out') / 'out', mobilenet_v2_quant)


def without_top_label(output: pathlib.Path, folder: pathlib.Path) -> pathlib.Path:
    """A copy of run `output` as an imagelabel older than the `top_label` column wrote it."""
    import pyarrow.parquet as pq
    for path in output.rglob('*'):
        if path.is_file():
            target = folder / path.relative_to(output)
            target.parent.mkdir(parents=True, exist_ok=True)
            if path.name.startswith('labels-') and path.suffix == '.parquet':
                pq.write_table(pq.read_table(path).drop_columns(['top_label']), target)
            else:
                shutil.copy(path, target)
    return folder
