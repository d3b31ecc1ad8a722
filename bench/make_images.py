"""Generate N seeded, photo-like JPEGs (default 512 at 500x375, quality 90).

Each image is smooth colour gradients plus soft blobs and a little sensor-like
noise, so that JPEG sizes (~40-80 KB) and decode costs resemble real photos
rather than flat test patterns. Image i depends only on (seed, i, size), so the
first k images of a larger set are the same files as a set of k: one folder can
serve every N, and regenerating is a no-op (idempotent).

    python bench/make_images.py --n 512 --out bench/out/images
"""
from __future__ import annotations

import argparse
import io
import os
import pathlib
import sys

import numpy as np
from PIL import Image, ImageFilter

DEFAULT_N = 512
DEFAULT_WIDTH, DEFAULT_HEIGHT = 500, 375
DEFAULT_SEED = 0
QUALITY = 90


def image_name(i: int) -> str:
    return f'img_{i:05d}.jpg'


def photo_like(i: int, *, width: int = DEFAULT_WIDTH, height: int = DEFAULT_HEIGHT,
               seed: int = DEFAULT_SEED) -> Image.Image:
    """One seeded photo-like RGB image."""
    rng = np.random.default_rng([seed, i])
    # Low-frequency colour field: a small random grid upsampled bicubically.
    gh, gw = rng.integers(3, 7), rng.integers(3, 8)
    grid = rng.uniform(0, 255, (gh, gw, 3)).astype(np.uint8)
    base = np.asarray(Image.fromarray(grid).resize((width, height), Image.BICUBIC), np.float32)
    # Soft blobs: "objects" at a middle frequency.
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for _ in range(rng.integers(4, 10)):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry, rx = rng.uniform(15, height / 3), rng.uniform(15, width / 3)
        colour = rng.uniform(-120, 120, 3).astype(np.float32)
        mask = np.exp(-(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) ** rng.uniform(1, 3))
        base += mask[..., None] * colour
    # Texture: band-limited noise (blurred) plus fine grain, like foliage and sensor noise.
    texture = rng.normal(0, 1, (height // 2, width // 2)).astype(np.float32)
    texture = np.asarray(Image.fromarray(((texture + 4) * 32).clip(0, 255).astype(np.uint8))
                         .resize((width, height), Image.BILINEAR), np.float32) - 128
    base += texture[..., None] * rng.uniform(0.3, 0.6)
    base += rng.normal(0, rng.uniform(3.0, 5.0), base.shape).astype(np.float32)
    im = Image.fromarray(base.clip(0, 255).astype(np.uint8))
    return im.filter(ImageFilter.GaussianBlur(radius=0.6))


def jpeg_bytes(i: int, **kwargs) -> bytes:
    buf = io.BytesIO()
    photo_like(i, **kwargs).save(buf, format='JPEG', quality=QUALITY)
    return buf.getvalue()


def ensure_images(out: str | os.PathLike, n: int, *, width: int = DEFAULT_WIDTH,
                  height: int = DEFAULT_HEIGHT, seed: int = DEFAULT_SEED) -> list[pathlib.Path]:
    """Make sure out/img_00000.jpg .. img_{n-1}.jpg exist; return their paths (sorted).

    The folder is keyed by size and seed by the caller (see `default_folder`); files
    already there are kept, missing ones are written (atomically, via a rename).
    """
    folder = pathlib.Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / image_name(i) for i in range(n)]
    missing = [(i, p, width, height, seed) for i, p in enumerate(paths) if not p.exists()]
    if len(missing) > 32 and (os.cpu_count() or 1) > 1:
        import concurrent.futures
        with concurrent.futures.ProcessPoolExecutor(os.cpu_count()) as pool:
            list(pool.map(_write_one, missing, chunksize=8))
    else:
        for job in missing:
            _write_one(job)
    return paths


def _write_one(job) -> None:
    i, path, width, height, seed = job
    tmp = path.with_name(path.name + f'.{os.getpid()}.tmp')
    tmp.write_bytes(jpeg_bytes(i, width=width, height=height, seed=seed))
    tmp.replace(path)


def default_folder(root: str | os.PathLike, *, width: int = DEFAULT_WIDTH,
                   height: int = DEFAULT_HEIGHT, seed: int = DEFAULT_SEED) -> pathlib.Path:
    return pathlib.Path(root) / f'synthetic-{width}x{height}-seed{seed}'


def write_manifest(paths, manifest: str | os.PathLike) -> pathlib.Path:
    """A .txt manifest (one absolute path per line) for `imagelabel run --input`."""
    manifest = pathlib.Path(manifest)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    text = ''.join(f'{pathlib.Path(p).resolve()}\n' for p in paths)
    if not manifest.exists() or manifest.read_text() != text:
        manifest.write_text(text)
    return manifest


def main(argv=None) -> int:
    here = pathlib.Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--n', type=int, default=DEFAULT_N, help='How many images.')
    parser.add_argument('--out', default=str(here / 'out' / 'images'),
                        help='Root folder; images go to OUT/synthetic-WxH-seedS/.')
    parser.add_argument('--width', type=int, default=DEFAULT_WIDTH)
    parser.add_argument('--height', type=int, default=DEFAULT_HEIGHT)
    parser.add_argument('--seed', type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    folder = default_folder(args.out, width=args.width, height=args.height, seed=args.seed)
    paths = ensure_images(folder, args.n, width=args.width, height=args.height, seed=args.seed)
    sizes = [p.stat().st_size for p in paths]
    print(f'{len(paths)} images in {folder}: JPEG sizes {min(sizes) / 1e3:.0f}-'
          f'{max(sizes) / 1e3:.0f} KB, mean {np.mean(sizes) / 1e3:.0f} KB')
    return 0


if __name__ == '__main__':
    sys.exit(main())
