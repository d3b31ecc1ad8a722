"""`imagelabel models`: choose a model by size, speed and accuracy, measured here.

The tutorials' advice, made concrete: a table of the registry's models (or the
models and model files named), with input size, file size, parameters and
embedding width read from the loaded model; `--measure` adds images per second
end to end through the pipeline on this machine, `--eval MANIFEST` adds top-1 and
top-5 on your labeled images (the `imagelabel eval` pipeline). `--format json`
prints the same rows for programs.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from typing import Sequence

import numpy as np

from pipeline.usage import HelpFormatter, UsageError, raise_usage, setup_logging, usage_error

#: Every column, in table order; the JSON keys are the same names.
COLUMNS = ('name', 'format', 'input', 'file_size', 'parameters', 'embedding',
           'images_per_s', 'top1', 'top5')
MEASURED = ('images_per_s',)
EVALUATED = ('top1', 'top5')


def parser() -> argparse.ArgumentParser:
    from transforms.decode import ResizeRecipe
    p = argparse.ArgumentParser(
        prog='imagelabel models', formatter_class=HelpFormatter, allow_abbrev=False,
        description=__doc__.split('\n\n')[1])
    p.add_argument('models', nargs='*',
                   help='Named models or model files (.keras/.h5/.tflite/SavedModel folder); '
                   'default: every named model of the registry.')
    p.add_argument('--measure', action='store_true',
                   help='Add images per second through the whole pipeline on generated '
                   'photo-like JPEGs (the marginal rate between N/4 and N images, so that '
                   'start-up does not count).')
    p.add_argument('--measure_images', type=int, default=256, help='N for --measure.')
    p.add_argument('--eval', default=None, metavar='MANIFEST',
                   help='Add top-1 and top-5 on a labeled CSV manifest (as imagelabel eval).')
    p.add_argument('--resize', default=ResizeRecipe.CROP.value,
                   choices=[r.value for r in ResizeRecipe],
                   help='Resize recipe for --measure and --eval.')
    p.add_argument('--format', default='table', choices=('table', 'json'),
                   help='A table for people, or a JSON list of rows for programs.')
    p.error = raise_usage
    return p


@dataclasses.dataclass
class ModelRow:
    """One model's figures; None where not measured (or not knowable without weights)."""
    name: str
    format: str
    input: str                     # 'HEIGHTxWIDTH'
    file_size: int | None          # bytes
    parameters: int | None
    embedding: int                 # embedding width; 0: none
    images_per_s: float | None = None
    top1: float | None = None      # fraction
    top5: float | None = None      # fraction

    def to_json(self, columns: Sequence[str]) -> dict:
        return {c: getattr(self, c) for c in columns}


# --- facts of a model (pure where possible) ------------------------------------------------

_WEIGHTED_OPS = {'CONV_2D', 'DEPTHWISE_CONV_2D', 'FULLY_CONNECTED', 'TRANSPOSE_CONV'}


def tflite_parameters(content: bytes) -> int:
    """Elements of a .tflite model's weights and biases (its constant tensors).

    Integer constants are shape and axis operands (RESHAPE's new shape, MEAN's axes),
    not parameters, except the int32 biases of quantized weighted ops.
    """
    from ai_edge_litert import schema_py_generated as schema
    ops = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith('_')}
    integer = {schema.TensorType.INT32, schema.TensorType.INT64}
    model = schema.Model.GetRootAsModel(content, 0)
    total = 0
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        biases = set()
        for o in range(graph.OperatorsLength()):
            op = graph.Operators(o)
            code = model.OperatorCodes(op.OpcodeIndex())
            if ops.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode())) in _WEIGHTED_OPS:
                biases.update(int(t) for t in op.InputsAsNumpy()[2:3])
        for t in range(graph.TensorsLength()):
            tensor = graph.Tensors(t)
            buffer = model.Buffers(tensor.Buffer()) if tensor.Buffer() > 0 else None
            if buffer is None or (buffer.DataLength() == 0 and not buffer.Size()):
                continue  # an activation or an input, not a constant
            if tensor.Type() in integer and t not in biases:
                continue
            total += int(np.prod(tensor.ShapeAsNumpy())) if tensor.ShapeLength() else 1
    return total


def path_size(path: str) -> int:
    """Bytes of a model file, or of every file under a SavedModel folder."""
    from apache_beam.io.filesystems import FileSystems
    if os.path.isdir(path) or not FileSystems.match([path])[0].metadata_list:
        pattern = FileSystems.join(path.rstrip('/'), '**')
        return sum(m.size_in_bytes for r in FileSystems.match([pattern]) for m in r.metadata_list)
    return sum(m.size_in_bytes for m in FileSystems.match([path])[0].metadata_list)


def _parameters(spec, runtime) -> int | None:
    """Counted on the model already loaded (a .tflite file's weight tensors are read)."""
    if spec.format == 'keras':
        return int(runtime.keras_model.count_params())
    if spec.format == 'saved_model':
        return runtime.parameters()
    if spec.format == 'tflite':
        from transforms.models import localized
        with localized(spec.path) as local, open(local, 'rb') as f:
            return tflite_parameters(f.read())
    return None


def _describe_application(spec) -> ModelRow:
    """A registry model, from its architecture alone: its weights download on first real use."""
    from transforms.models.tf_import import import_tensorflow
    import_tensorflow()
    import keras
    model = getattr(keras.applications, spec.application)(weights=None)
    if spec.embedding_layer:
        embedding = model.get_layer(spec.embedding_layer).output
    else:
        embedding = next(layer for layer in reversed(model.layers)
                         if isinstance(layer, keras.layers.Dense)).input
    h, w = spec.input_size or model.inputs[0].shape[1:3]
    return ModelRow(spec.name, spec.format, f'{h}x{w}', file_size=None,
                    parameters=int(model.count_params()), embedding=int(embedding.shape[-1]))


def describe(model: str, *, resize: str = 'crop') -> ModelRow:
    """A model's static figures, read from the loaded model (ValueError if it does not load)."""
    from transforms.label import load_labeled_model
    from transforms.models import resolve_spec
    spec = resolve_spec(model)
    if spec.format == 'keras_application' and not spec.weights:
        return _describe_application(spec)
    loaded = load_labeled_model(spec, batch_size=1, precision='float32', threads=None,
                                recipe=resize)
    h, w = loaded.runtime.input_size
    return ModelRow(spec.name, spec.format, f'{h}x{w}', file_size=path_size(spec.path),
                    parameters=_parameters(spec, loaded.runtime),
                    embedding=int(loaded.runtime.embedding_dim))


# --- measured figures ----------------------------------------------------------------------

def photo_like_jpeg(path: str, i: int, *, size=(500, 375), seed: int = 0) -> None:
    """A seeded photo-like JPEG: smooth colour fields plus grain (decodes like a photo)."""
    from PIL import Image
    rng = np.random.default_rng([seed, i])
    w, h = size
    grid = rng.uniform(0, 255, (rng.integers(3, 7), rng.integers(3, 8), 3)).astype(np.uint8)
    base = np.asarray(Image.fromarray(grid).resize((w, h), Image.BICUBIC), np.float32)
    base += rng.normal(0, 6, base.shape)
    Image.fromarray(base.clip(0, 255).astype(np.uint8)).save(path, format='JPEG', quality=90)


def _run_seconds(model: str, images: str, output: str, resize: str) -> float:
    from pipeline.launch import execute, prepare
    summary = execute(prepare(['--input', images, '--output', output, '--model', model,
                               '--resize', resize]))
    if summary is None or not summary.balanced or summary.errors:
        raise RuntimeError(f'the measuring run of {model} did not label every image')
    return summary.seconds


def measure(model: str, n: int, *, resize: str, workdir: str) -> float:
    """End-to-end images/s: (n - n/4) / (time(n) - time(n/4)), start-up cancelled out."""
    small = max(n // 4, 1)
    for i in range(n):
        name = os.path.join(workdir, 'images', f'img_{i:05d}.jpg')
        if not os.path.exists(name):
            os.makedirs(os.path.dirname(name), exist_ok=True)
            photo_like_jpeg(name, i)
    manifests = {}
    for count in (small, n):
        manifests[count] = os.path.join(workdir, f'first_{count}.txt')
        with open(manifests[count], 'w') as f:
            f.write('\n'.join(os.path.join(workdir, 'images', f'img_{i:05d}.jpg')
                              for i in range(count)) + '\n')
    stamp = f'{os.path.basename(model)}-{time.monotonic_ns()}'
    t_small = _run_seconds(model, manifests[small], os.path.join(workdir, f'{stamp}-s'), resize)
    t_big = _run_seconds(model, manifests[n], os.path.join(workdir, f'{stamp}-n'), resize)
    if t_big <= t_small:  # too few images to see past the noise: report the plain rate
        return n / t_big
    return (n - small) / (t_big - t_small)


# --- the table -------------------------------------------------------------------------------

def _cell(column: str, value) -> str:
    if value is None:
        return '–'
    if column == 'file_size':
        return f'{value / 1e6:.1f} MB'
    if column == 'parameters':
        return f'{value / 1e6:.2f}M'
    if column in EVALUATED:
        return f'{100 * value:.1f}%'
    if column == 'images_per_s':
        return f'{value:.1f}'
    return str(value)


def render_table(rows: Sequence[ModelRow], columns: Sequence[str]) -> str:
    cells = [[_cell(c, getattr(r, c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    left = {'name', 'format'}

    def line(values):
        return '  '.join(v.ljust(w) if c in left else v.rjust(w)
                         for c, v, w in zip(columns, values, widths)).rstrip()
    return '\n'.join([line(columns)] + [line(row) for row in cells])


def table(args: argparse.Namespace) -> tuple[list[ModelRow], list[str]]:
    from transforms.models import REGISTRY
    if args.measure_images < 4:
        raise UsageError(f'--measure_images must be 4 or more, got {args.measure_images}')
    if args.eval and not args.eval.lower().endswith('.csv'):
        raise UsageError(f'--eval {args.eval}: give a CSV manifest with uri and label_index '
                         'or label columns')
    from apache_beam.io.filesystems import FileSystems
    if args.eval and not FileSystems.exists(args.eval):  # before any model is measured
        raise UsageError(f'--eval {args.eval} does not exist')
    names = args.models or sorted(REGISTRY)
    columns = [c for c in COLUMNS if (c not in MEASURED or args.measure)
               and (c not in EVALUATED or args.eval)]
    rows = [describe(m, resize=args.resize) for m in names]  # every model loads, or none runs
    with tempfile.TemporaryDirectory(prefix='imagelabel-models-') as work:
        for model, row in zip(names, rows):
            if args.measure:
                row.images_per_s = measure(model, args.measure_images, resize=args.resize,
                                           workdir=work)
            if args.eval:
                from pipeline.evaluate import evaluate_manifest
                out = os.path.join(work, f'eval-{len(os.listdir(work))}')
                result = evaluate_manifest(['--input', args.eval, '--output', out,
                                            '--model', model, '--resize', args.resize])
                row.top1, row.top5 = result.report.top1, result.report.top5
    return rows, columns


def main(argv: Sequence[str]) -> int:
    setup_logging()
    try:
        args = parser().parse_args(list(argv))
        rows, columns = table(args)
    except ValueError as e:
        return usage_error(e)
    if args.format == 'json':
        print(json.dumps([r.to_json(columns) for r in rows], indent=2))
    else:
        print(render_table(rows, columns))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
