"""Which --batch_size? The model runtime's images/s at several batch sizes.

Runs imagelabel's own compiled model function (transforms.models, the code
`imagelabel run` uses) on pre-decoded uint8 batches, so the figure is the model's
cost per image at each size, without decoding or Beam.

    python bench/batch_sizes.py [--model M.keras] [--sizes 8,16,32,64] [--precision float32,bf16]
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--model', default=None,
                        help='a .keras classifier; default: a seeded random Inception-v3')
    parser.add_argument('--sizes', default='8,16,32,64', help='batch sizes to try')
    parser.add_argument('--precision', default='float32,bf16', help='precisions to try')
    parser.add_argument('--images', type=int, default=128, help='images per timed pass')
    parser.add_argument('--passes', type=int, default=2, help='timed passes; the best counts')
    args = parser.parse_args()

    import keras
    import numpy as np

    from transforms.label import load_labeled_model
    from transforms.models import resolve_spec

    model = args.model
    if model is None:
        model = str(ROOT / 'bench' / 'out' / 'models' / 'inception_v3_random_seed0.keras')
        if not os.path.exists(model):
            os.makedirs(os.path.dirname(model), exist_ok=True)
            keras.utils.set_random_seed(0)
            keras.applications.InceptionV3(weights=None).save(model)
    spec = resolve_spec(model)
    print(f'{"precision":<10} {"batch":>5} {"images/s":>9}')
    for precision in args.precision.split(','):
        for size in (int(s) for s in args.sizes.split(',')):
            loaded = load_labeled_model(spec, batch_size=size, precision=precision,
                                        threads=None, recipe='crop')
            h, w = loaded.runtime.input_size
            pixels = np.random.default_rng(0).integers(0, 256, (args.images, h, w, 3), np.uint8)
            loaded.predict(pixels[:size])  # trace and warm up
            best = 0.0
            for _ in range(args.passes):
                start = time.perf_counter()
                loaded.predict(pixels)
                best = max(best, args.images / (time.perf_counter() - start))
            print(f'{precision:<10} {size:>5} {best:>9.1f}', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
