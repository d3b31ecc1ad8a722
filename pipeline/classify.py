"""`imagelabel classify`: label a few images directly, no pipeline, like TF's label_image.

`--self_test` is the Inception tutorial's check: Grace Hopper's photo must come
out "military uniform" first with the plain resize.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from pipeline.options import MODEL_HELP
from pipeline.usage import HelpFormatter, UsageError, raise_usage, usage_error
from transforms.decode import ResizeRecipe, decode_image
from transforms.errors import ImageError
from transforms.models import resolve_spec

SELF_TEST_LABEL = 'military uniform'  # TF label_image's check on Grace Hopper's photo


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='imagelabel classify', formatter_class=HelpFormatter,
        description='Classify images directly (no pipeline) and print the top labels, '
                    'like TensorFlow\'s label_image.')
    p.add_argument('images', nargs='*', help='Image files (local or gs://).')
    p.add_argument('--model', default='inception_v3', help=MODEL_HELP)
    p.add_argument('--weights', default=None, help='Weights file for a named model.')
    p.add_argument('--labels', default=None, help='Class names file, one per line.')
    p.add_argument('--top_k', type=int, default=5, help='How many labels to print.')
    p.add_argument('--resize', default=ResizeRecipe.PLAIN.value,
                   choices=[r.value for r in ResizeRecipe],
                   help='Resize recipe (plain is label_image\'s).')
    p.add_argument('--self_test', action='store_true',
                   help=f'Check that the first image (Grace Hopper\'s photo) comes out '
                   f'"{SELF_TEST_LABEL}" first, with plain resize; exit 1 if not.')
    p.error = raise_usage
    return p


def classify(args: argparse.Namespace) -> int:
    from transforms.label import load_labeled_model
    from transforms.postprocess import top_k
    from transforms.read import DEFAULT_MAX_BYTES, read_image_bytes

    if not args.images:
        raise UsageError('give at least one image' + (
            " (for --self_test: Grace Hopper's photo, label_image's grace_hopper.jpg)"
            if args.self_test else ''))
    if args.top_k < 1:
        raise UsageError(f'--top_k must be a positive integer, got {args.top_k}')
    recipe = ResizeRecipe.PLAIN if args.self_test else ResizeRecipe(args.resize)
    spec = resolve_spec(args.model, weights=args.weights, labels=args.labels)
    model = load_labeled_model(spec, batch_size=1, precision='float32', threads=None,
                               recipe=recipe.value)
    if args.top_k > model.num_classes:
        raise UsageError(f'--top_k {args.top_k} is more than the model\'s '
                         f'{model.num_classes} classes')
    status = 0
    for n, path in enumerate(args.images):
        try:  # the pipeline's own read and decode, with their error classes
            image = read_image_bytes(path, max_bytes=DEFAULT_MAX_BYTES)
            pixels = decode_image(image.data, model.runtime.input_size, recipe=recipe).pixels
        except ImageError as e:
            print(f'{path}: {e.stage}/{e.error}: {e.message}', file=sys.stderr)
            status = 1
            continue
        probs = model.predict(pixels[None]).probabilities
        indices, scores = top_k(probs[0], args.top_k)
        if len(args.images) > 1:
            print(f'{path}:')
        for i, score in zip(indices, scores):
            print(f'{model.labels[i]} (score = {score:.5f})')
        if args.self_test and n == 0:
            got = model.labels[indices[0]]
            if got == SELF_TEST_LABEL:
                print(f'self-test passed: top label is "{SELF_TEST_LABEL}"')
            else:
                print(f'self-test FAILED: expected "{SELF_TEST_LABEL}", got "{got}"',
                      file=sys.stderr)
                status = 1
    return status


def main(argv: Sequence[str]) -> int:
    try:
        return classify(parser().parse_args(list(argv)))
    except ValueError as e:  # UsageError, and the model's and flags' validation
        return usage_error(e)
