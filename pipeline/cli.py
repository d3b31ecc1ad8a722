"""The `imagelabel` command: `run` a labeling job, or `classify` a few images.

Bad input is one clear `imagelabel: error: ...` line and exit code 2, never a
traceback: the user fixes a flag, not our code.
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
from typing import Sequence

from apache_beam.options import pipeline_options as beam_options

from pipeline.options import MODEL_HELP, ImageLabelOptions
from transforms.decode import ResizeRecipe, decode_image
from transforms.errors import ImageError
from transforms.models import resolve_spec

SELF_TEST_LABEL = 'military uniform'  # TF label_image's check on Grace Hopper's photo
EXIT_USAGE = 2


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


class UsageError(ValueError):
    """A mistake in the command line."""


def _raise_usage(message: str):
    raise UsageError(message)


def _run_parser() -> argparse.ArgumentParser:
    parser = beam_options._BeamArgumentParser(  # noqa: SLF001 - supports Beam's value providers
        prog='imagelabel run', formatter_class=_Formatter, allow_abbrev=False,
        description='Label images with a Beam pipeline; write Parquet.',
        epilog='Any Beam pipeline option is accepted too, e.g. --runner DataflowRunner '
               '--project P --region R --temp_location gs://..., or '
               '--direct_running_mode multi_processing --direct_num_workers 2.')
    ImageLabelOptions._add_argparse_args(parser)  # noqa: SLF001
    parser.error = _raise_usage
    return parser


def _check_beam_flags(rest: Sequence[str]) -> None:
    """Anything our parser did not take must be a real Beam flag: typos are errors."""
    parser = beam_options._BeamArgumentParser(allow_abbrev=False)  # noqa: SLF001
    seen = {}
    for cls in beam_options.PipelineOptions.__subclasses__():
        if cls is not ImageLabelOptions:
            seen.setdefault(str(cls), cls)
    for cls in seen.values():
        cls._add_argparse_args(parser)  # noqa: SLF001
    _, unknown = parser.parse_known_args(list(rest))
    flags = [a for a in unknown if a.startswith('--')]
    if flags:
        raise UsageError(f'unknown flag {flags[0]}; see imagelabel run --help')


def _classify_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='imagelabel classify', formatter_class=_Formatter,
        description='Classify images directly (no pipeline) and print the top labels, '
                    'like TensorFlow\'s label_image.')
    parser.add_argument('images', nargs='*', help='Image files (local or gs://).')
    parser.add_argument('--model', default='inception_v3', help=MODEL_HELP)
    parser.add_argument('--weights', default=None, help='Weights file for a named model.')
    parser.add_argument('--labels', default=None, help='Class names file, one per line.')
    parser.add_argument('--top_k', type=int, default=5, help='How many labels to print.')
    parser.add_argument('--resize', default=ResizeRecipe.PLAIN.value,
                        choices=[r.value for r in ResizeRecipe],
                        help='Resize recipe (plain is label_image\'s).')
    parser.add_argument('--self_test', action='store_true',
                        help=f'Check that the first image (Grace Hopper\'s photo) comes out '
                        f'"{SELF_TEST_LABEL}" first, with plain resize; exit 1 if not.')
    parser.error = _raise_usage
    return parser


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


_JOB_LABEL = re.compile(r'^[a-z][a-z0-9_-]*=[^/]*$')


def labels_alias(argv: Sequence[str]) -> list[str]:
    """`--labels FILE` means --labels_file; `--labels key=value` stays a Dataflow job label."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == '--labels' and i + 1 < len(out) and not _JOB_LABEL.match(out[i + 1]):
            out[i] = '--labels_file'
        elif arg.startswith('--labels=') and not _JOB_LABEL.match(arg[len('--labels='):]):
            out[i] = '--labels_file=' + arg[len('--labels='):]
    return out


def run_command(argv: Sequence[str]) -> int:
    from pipeline.run import execute, prepare
    argv = labels_alias(argv)
    try:
        _, rest = _run_parser().parse_known_args(list(argv))
        _check_beam_flags(rest)
        launch = prepare(list(argv))
    except ValueError as e:  # a bad flag, input, model or output: the user's to fix
        return _usage_error(e)
    summary = execute(launch)  # failures of the job itself keep their traceback
    if summary is None:
        return 0
    print(summary.render())
    return 0 if summary.balanced else 1


def _usage_error(e: Exception) -> int:
    print(f'imagelabel: error: {e}', file=sys.stderr)
    return EXIT_USAGE


def _setup_logging() -> None:
    log = logging.getLogger('imagelabel')
    if log.handlers:  # main() may run many times in one process (tests, notebooks)
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter('%(asctime)s imagelabel: %(message)s', '%H:%M:%S'))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = argparse.ArgumentParser(
        prog='imagelabel', description='Batch image labeling on Apache Beam and TensorFlow.')
    top.add_argument('command', choices=['run', 'classify'],
                     help='run: a Beam labeling job to Parquet; classify: print labels of a '
                     'few images')
    if not argv or argv[0] in ('-h', '--help'):
        top.print_help()
        return 0 if argv else EXIT_USAGE
    command, rest = argv[0], argv[1:]
    _setup_logging()
    if command == 'run':
        if '-h' in rest or '--help' in rest:
            _run_parser().print_help()
            return 0
        return run_command(rest)  # catches its own validation errors, and only those
    if command != 'classify':
        return _usage_error(UsageError(f'unknown command {command!r}; use run or classify'))
    try:
        return classify(_classify_parser().parse_args(rest))
    except ValueError as e:  # UsageError, and the model's and flags' validation
        return _usage_error(e)


if __name__ == '__main__':
    sys.exit(main())
