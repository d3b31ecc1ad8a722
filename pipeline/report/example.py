"""Regenerate the README's report screenshot (`pipeline/report/example.png`).

Every photo in it is one of scikit-image's sample images that are public domain
or CC0 (credits in the README), so the picture may ship with the project. The
runs use the quantized MobileNetV2 `.tflite` from the test assets (only its
labels appear in the picture). Needs the `docs` extra (scikit-image,
playwright) and Debian's chromium; `make report-example` runs it.

    python -m pipeline.report.example [--model mobilenet_v2_1.0_224_quant.tflite]
"""
from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[2]
ASSETS = pathlib.Path(os.environ.get('IMAGELABEL_ASSETS', ROOT.parent / 'shared' / 'assets'))

#: scikit-image sample -> file name. Public domain or CC0 only (see the README's credits).
PHOTOS = {'chelsea': 'chelsea_the_cat.jpg', 'coffee': 'coffee.jpg', 'rocket': 'rocket.jpg',
          'astronaut': 'astronaut.jpg', 'camera': 'cameraman.jpg', 'clock': 'clock.jpg',
          'hubble_deep_field': 'hubble_deep_field.jpg', 'retina': 'retina.jpg',
          'horse': 'horse.png', 'brick': 'brick.jpg', 'grass': 'grass.jpg',
          'gravel': 'gravel.jpg', 'cell': 'cell.jpg', 'text': 'text.png'}
#: The "previous" run saw only these.
PREVIOUS = ['chelsea', 'coffee', 'rocket', 'astronaut', 'brick', 'grass', 'gravel']


def write_photos(folder: pathlib.Path, names: list[str]) -> None:
    import numpy as np
    import skimage.data
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        pixels = np.asarray(getattr(skimage.data, name)())
        if pixels.dtype == bool:
            pixels = pixels.astype(np.uint8) * 255
        Image.fromarray(pixels.astype(np.uint8)).save(folder / PHOTOS[name], quality=92)


def imagelabel(work: pathlib.Path, *args: str) -> None:
    """`imagelabel ARGS` run inside `work`, so the page shows short relative paths."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL='2')
    subprocess.run([sys.executable, '-m', 'pipeline.cli', *map(str, args)], check=True, env=env,
                   cwd=work)


def screenshot(page: pathlib.Path, png: pathlib.Path, width: int = 960, colours: int = 96) -> None:
    from PIL import Image
    from playwright.sync_api import sync_playwright
    raw = png.with_suffix('.raw.png')
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path='/usr/bin/chromium', args=[
            '--no-sandbox', '--disable-gpu', '--disable-background-networking',
            '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'])
        tab = browser.new_page(viewport={'width': width, 'height': 800})
        tab.goto(page.as_uri())
        tab.screenshot(path=str(raw), full_page=True)
        browser.close()
    # A small palette keeps the PNG small enough to live in the repository.
    Image.open(raw).convert('RGB').quantize(colours, dither=Image.Dither.NONE).save(png, optimize=True)
    raw.unlink()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--model', default=str(ASSETS / 'models' / 'mobilenet_v2_1.0_224_quant.tflite'))
    p.add_argument('--work', default=os.path.join(tempfile.gettempdir(), 'imagelabel-example'))
    p.add_argument('--png', default=str(ROOT / 'pipeline' / 'report' / 'example.png'))
    a = p.parse_args()
    work = pathlib.Path(a.work)
    shutil.rmtree(work, ignore_errors=True)
    write_photos(work / 'previous', PREVIOUS)
    write_photos(work / 'photos', list(PHOTOS))
    shutil.copyfile(work / 'photos' / 'chelsea_the_cat.jpg', work / 'photos' / 'chelsea_copy.jpg')
    shutil.copyfile(work / 'photos' / 'coffee.jpg', work / 'photos' / '<img src=x onerror=alert(1)>.jpg')
    (work / 'photos' / 'notes.jpg').write_text('not an image, whatever its name says\n')
    (work / 'photos' / 'cut_short.jpg').write_bytes((work / 'photos' / 'rocket.jpg').read_bytes()[:3000])
    model = os.path.abspath(a.model)
    imagelabel(work, 'run', '--input', 'previous', '--output', 'out-previous', '--model', model)
    imagelabel(work, 'run', '--input', 'photos', '--output', 'out', '--model', model)
    imagelabel(work, 'report', '--output', 'out', '--compare', 'out-previous',
               '--out', 'report.html')
    screenshot(work / 'report.html', pathlib.Path(a.png).resolve())
    print(f'{a.png}: {pathlib.Path(a.png).stat().st_size / 1e3:.0f} KB')


if __name__ == '__main__':
    main()
