"""The formats registry: how each kind of model file is recognised, loaded and run.

Each format's loader imports its runtime module only when called, so choosing a
.tflite model never imports TensorFlow. `--help` texts and error messages about
formats are built from this registry (`format_names`, `model_help`).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from transforms.models.runtime import Runtime
from transforms.models.spec import PRECISIONS, ModelSpec


def _load_keras(spec: ModelSpec, *, batch_size: int, precision: str, **_) -> Runtime:
    from transforms.models.keras import KerasRuntime, load_keras_model
    model, fingerprint = load_keras_model(spec)
    return KerasRuntime(model, spec, fingerprint, batch_size=batch_size, precision=precision)


def _load_saved_model(spec: ModelSpec, *, num_classes: int, **_) -> Runtime:
    from transforms.models.saved_model import SavedModelRuntime
    return SavedModelRuntime(spec, num_classes=num_classes)


def _load_tflite(spec: ModelSpec, *, threads: int | None, interpreters: int | None,
                 **_) -> Runtime:
    from transforms.models.litert import TFLiteRuntime
    return TFLiteRuntime(spec, threads=threads, interpreters=interpreters)


def _load_litert_conversion(spec: ModelSpec, *, threads: int | None, num_classes: int,
                            interpreters: int | None, precision: str, **_) -> Runtime:
    """A LiteRT conversion from the model cache: int8, or float32 (its format's precision)."""
    from transforms.models.int8 import Int8Runtime
    return Int8Runtime(spec, threads=threads, num_classes=num_classes,
                       interpreters=interpreters, precision=precision)


def _load_openvino(spec: ModelSpec, *, threads: int | None, num_classes: int,
                   interpreters: int | None, **_) -> Runtime:
    from transforms.models.openvino_int8 import OpenVINORuntime
    return OpenVINORuntime(spec, threads=threads, num_classes=num_classes,
                           interpreters=interpreters)


#: Images per model call for the runtimes that invoke one image at a time (LiteRT,
#: OpenVINO): each interpreter takes the batch's next image, and at a batch's end all
#: but the last one wait for it, about half an invoke each, and again while the
#: bundle thread makes rows and gathers the next batch. Per image that wait shrinks
#: with the batch. Quantized MobileNetV2 on 2 cores (AMD EPYC Zen 3, alternating runs,
#: against bench/cores_limit.py's same-run bound): 0.929 of the bound at 32 and 0.948
#: at 128 (means of 6 runs), 0.954 at 256 (3 runs); then 256 against 32 in 4 more
#: pairs, 0.965 against 0.921, with batch tails down from 2.4% of the run to 0.3%.
#: The price is memory: a batch of pixels (38 MB at 224 x 224), and a batch read and one
#: decoded ahead of it (pipeline.graph.read_ahead), each capped by --max_inflight_bytes:
#: peak RSS 371 MB against 303 MB at 32, on those 1000 photos.
PER_IMAGE_BATCH = 256


@dataclasses.dataclass(frozen=True)
class ModelFormat:
    """How one kind of model is recognised and run."""
    suffixes: tuple[str, ...]        # file name endings that select it (() = never by name)
    load: Callable[..., Runtime]     # imports its runtime (and TensorFlow) only when called
    supports_bf16: bool
    uses_tensorflow: bool
    described_as: str                # how --help and error messages name it
    by_path: bool = True             # can be given as --model PATH (applications are by name)
    converts_to_int8: bool = False   # --precision int8 converts it at launch (models.int8)
    precision: str | None = None     # a format that only runs at one precision
    batch_size: int = 32             # default --batch_size (bench/batch_sizes.py for Keras)


FORMATS: dict[str, ModelFormat] = {
    'keras_application': ModelFormat((), _load_keras, True, True, 'a named Keras application',
                                     by_path=False, converts_to_int8=True),
    'keras': ModelFormat(('.keras', '.h5', '.hdf5'), _load_keras, True, True, 'a Keras file',
                         converts_to_int8=True),
    'saved_model': ModelFormat((), _load_saved_model, False, True,  # a folder with saved_model.pb
                               'a SavedModel directory', converts_to_int8=True),
    'tflite': ModelFormat(('.tflite',), _load_tflite, False, False, 'a TFLite file',
                          batch_size=PER_IMAGE_BATCH),
    # What --precision int8 made at launch, loaded from the model cache by workers.
    'int8_tflite': ModelFormat((), _load_litert_conversion, False, False, 'an int8 conversion',
                               by_path=False, precision='int8', batch_size=PER_IMAGE_BATCH),
    'int8_openvino': ModelFormat((), _load_openvino, False, False,
                                 'an int8 conversion for OpenVINO', by_path=False,
                                 precision='int8', batch_size=PER_IMAGE_BATCH),
    # What --float_runtime litert made at launch (models.float_litert), from the cache.
    'float_tflite': ModelFormat((), _load_litert_conversion, False, False,
                                'a float32 LiteRT conversion', by_path=False,
                                precision='float32', batch_size=PER_IMAGE_BATCH),
}


def path_kinds() -> str:
    """'a .keras/.h5/.hdf5 file, a SavedModel directory or a .tflite file', from FORMATS."""
    kinds = []
    for fmt in FORMATS.values():
        if not fmt.by_path:
            continue
        if fmt.suffixes:
            kinds.append(f'a {"/".join(fmt.suffixes)} file')
        else:
            kinds.append(fmt.described_as)
    return _either(kinds)


def _either(names: list[str]) -> str:
    """'a, b or c' ('' for none)."""
    return ', '.join(names[:-1]) + ' or ' + names[-1] if len(names) > 1 else ''.join(names)


def batch_size_for(spec: ModelSpec, given: int | None = None) -> int:
    """`--batch_size` if given, else the default of the format that will run `spec`."""
    return given if given is not None else FORMATS[spec.format].batch_size


def batch_size_help() -> str:
    """The --batch_size default per kind of model, from FORMATS, for --help."""
    by_size: dict[int, list[str]] = {}
    for fmt in FORMATS.values():
        by_size.setdefault(fmt.batch_size, []).append(fmt.described_as)
    return '; '.join(f'{size} for {_either(names)}' for size, names in sorted(by_size.items()))


def formats_supporting(precision: str) -> list[str]:
    """Format names that can run at `precision` (for error messages)."""
    if precision == 'bf16':
        return [name for name, f in FORMATS.items() if f.supports_bf16]
    if precision == 'int8':
        return [name for name, f in FORMATS.items() if f.converts_to_int8]
    return [name for name, f in FORMATS.items() if f.precision in (None, precision)]


def load_runtime(spec: ModelSpec, *, batch_size: int = 32, precision: str = 'float32',
                 threads: int | None = None, num_classes: int = 1000,
                 interpreters: int | None = None) -> Runtime:
    """Load a spec's model once; every failure is a ValueError with one clear line.

    `threads`: the runtime's threads (LiteRT: per interpreter); `interpreters`:
    LiteRT interpreters running a batch's slices in parallel. None: chosen from
    the core count (transforms.models.interpreters.choose_layout).
    """
    if precision not in PRECISIONS:
        raise ValueError(f'--precision must be one of {PRECISIONS}')
    fmt = FORMATS[spec.format]
    if fmt.precision is not None:
        if precision != fmt.precision:
            raise ValueError(f'{fmt.described_as} runs at {fmt.precision} only')
    elif precision == 'bf16' and not fmt.supports_bf16:
        able = ', '.join(FORMATS[n].described_as for n in formats_supporting('bf16'))
        raise ValueError(f'--precision bf16 applies to Keras models ({able}); {fmt.described_as} '
                         'runs at the precision it was converted with')
    elif precision == 'int8':
        # Conversion happens once, at launch (pipeline.model_prep), never in a worker.
        able = ', '.join(FORMATS[n].described_as for n in formats_supporting('int8'))
        if not fmt.converts_to_int8:
            raise ValueError(f'--precision int8 applies to {able}; {fmt.described_as} '
                             'runs at the precision it was converted with')
        raise ValueError('--precision int8: load the converted model '
                         '(pipeline.model_prep converts it at launch)')
    if fmt.uses_tensorflow:
        from transforms.models.keras import configure_tensorflow_threads
        configure_tensorflow_threads(threads)
    return fmt.load(spec, batch_size=batch_size, precision=precision, threads=threads,
                    num_classes=num_classes, interpreters=interpreters)
