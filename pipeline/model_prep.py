"""The launcher's model work: load once, convert (int8, LiteRT float32), check agreement.

`load_model_facts` runs at launch, before any image is read by the job: a bad
model, or a reduced precision that disagrees with float32, fails here with one
clear line. It loads through the process-wide cache
(`transforms.label.shared_labeled_model`), so a DirectRunner worker in this
process reuses the launcher's model instead of loading it again.

Reduced precision (int8, bf16) is measured against float32 on a held-out, seeded
slice of the run's own images; int8 is calibrated on another, disjoint slice.
A float32 conversion for LiteRT (--float_runtime litert) is measured against
TensorFlow the same way, once, when it is made.
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import itertools
import logging
import random
import tempfile
import time

import numpy as np

from pipeline import agreement as agreement_math
from pipeline.clock import now
from pipeline.graph import ModelFacts
from pipeline.options import Settings
from transforms.cpu import this_cpu
from transforms.decode import decode_image
from transforms.errors import ImageError
from transforms.label import LoadedModel, load_labeled_model, shared_labeled_model
from transforms.models import FORMATS, ModelSpec, resolve_spec
from transforms.models.formats import batch_size_for
from transforms.listing import expand_source
from transforms.read import RetryPolicy, read_image_bytes
from transforms.storage import ObjectReader

_log = logging.getLogger('imagelabel')

#: How many listed URIs the sample is drawn from (listing millions at launch would not pay).
SAMPLE_POOL = 20_000
SEED = 0


@dataclasses.dataclass(frozen=True)
class Sample:
    """Decoded images of the run's own input: a held-out slice and a calibration slice."""
    held_out: np.ndarray     # (n, h, w, 3) uint8, for the agreement check
    calibration: np.ndarray  # (m, h, w, 3) uint8, for int8 calibration (disjoint when m > 0)
    digest: str              # names the calibration set: URIs, contents, size, recipe
    source: str              # names where it is drawn from: --input, counts (as asked and
                             # as found), size, recipe
    held_out_names: tuple[str, ...] = ()     # 'uri:content_sha256' of each held-out image
    calibration_names: tuple[str, ...] = ()  # the same, of each calibration image


def unseen(sample: Sample, calibrated: set[str]) -> tuple[np.ndarray, int]:
    """The held-out images whose content is not in `calibrated` (the 'uri:content_sha256'
    names of a cached conversion's calibration set), and how many were left out.

    A nightly run over a growing --input draws another sample each night, but converts
    once: tonight's held-out slice may hold images the cached model was calibrated on
    (under any name: it is the content that flatters its agreement). If every held-out
    image was, all are kept, with a warning: no check at all would be worse.
    """
    seen = {_content(name) for name in calibrated}
    keep = [i for i, name in enumerate(sample.held_out_names) if _content(name) not in seen]
    if not keep and len(sample.held_out):
        _log.warning('int8: all %d held-out images were in the cached conversion\'s '
                     'calibration set, so agreement is measured on images it was calibrated '
                     'on; raise --agreement_images for a fairer check', len(sample.held_out))
    if len(keep) in (0, len(sample.held_out)):
        return sample.held_out, 0
    return sample.held_out[keep], len(sample.held_out) - len(keep)


def _content(name: str) -> str:
    """The content hash of a sample name ('uri:content_sha256'; a URI may hold ':')."""
    return name.rsplit(':', 1)[-1]


def sample_images(s: Settings, size: tuple[int, int], *, held_out: int,
                  calibration: int, purpose: str | None = None) -> Sample:
    """A seeded sample of --input, decoded at the model's size (unreadable images skipped).

    Read as the pipeline reads (read.read_image_bytes: the same limits, retries and
    storage client), so the sample sees what the workers will.
    """
    uris = sorted(set(itertools.islice(expand_source(s.input), SAMPLE_POOL)))
    random.Random(SEED).shuffle(uris)
    pixels, names = [], []
    reader, retry = ObjectReader(), RetryPolicy(attempts=s.read_retries)
    for uri in uris:
        if len(pixels) >= held_out + calibration:
            break
        try:
            image = read_image_bytes(uri, max_bytes=s.max_bytes, retry=retry, reader=reader)
            pixels.append(decode_image(image.data, size, recipe=s.resize,
                                       max_pixels=s.max_pixels).pixels)
        except ImageError:
            continue
        names.append(f'{uri}:{image.content_sha256}')
    if not pixels:
        raise ValueError(f'{purpose or "--precision " + s.precision}: none of the first '
                         f'{len(uris)} images of {s.input} could be decoded, so there is '
                         'nothing to calibrate or compare on')
    # Few images: split them, so the agreement slice stays held out of calibration.
    n_held = min(held_out, len(pixels) // 2 if calibration else len(pixels)) or 1
    cal = pixels[n_held:n_held + calibration] or pixels[:n_held]
    cal_names = names[n_held:n_held + calibration] or names[:n_held]
    what = purpose or f'--precision {s.precision}'
    if n_held < held_out:
        _log.warning('%s: agreement is measured on %d images, not --agreement_images %d: '
                     'only %d of %s could be sampled', what, n_held, held_out, len(pixels),
                     s.input)
    if calibration and len(pixels) <= n_held:
        _log.warning('%s: a single image to sample, so calibration uses the held-out one and '
                     'the agreement is not measured on an unseen image', what)
    digest = hashlib.sha256(repr((cal_names, tuple(size), s.resize.value)).encode()).hexdigest()
    # As found too: a first night with few images is not every later night's calibration.
    found = (n_held, len(cal) if calibration else 0)
    source = hashlib.sha256(repr((s.input, held_out, calibration, found, SEED, SAMPLE_POOL,
                                  tuple(size), s.resize.value)).encode()).hexdigest()
    return Sample(np.stack(pixels[:n_held]), np.stack(cal) if calibration else
                  np.zeros((0, *size, 3), np.uint8), digest, source,
                  tuple(names[:n_held]), tuple(cal_names) if calibration else ())


def _resolve(s: Settings) -> ModelSpec:
    return resolve_spec(s.model, weights=s.weights, labels=s.labels, preprocess=s.preprocess,
                        outputs=s.model_outputs)


def _load(s: Settings, spec: ModelSpec, precision: str, *, for_workers: bool = True,
          with_head: bool = True) -> LoadedModel:
    """The model, loaded once per process when workers here will ask for it again
    (shared_labeled_model); a float32 model only used at launch, as int8's source or
    the agreement reference, is not kept for the whole run. `with_head=False`: the
    base model's own classes (a --head fits one model_id, not its conversion's too)."""
    load = shared_labeled_model if for_workers else load_labeled_model
    # The workers' handler asks for the same batch size (pipeline.graph), so a model
    # loaded here for them is found again in the process's cache, not loaded twice.
    return load(spec, batch_size=batch_size_for(spec, s.batch_size), precision=precision,
                threads=s.model_threads, recipe=s.resize.value,
                head=s.head if with_head else None, interpreters=s.interpreters)


def _facts(spec: ModelSpec, model: LoadedModel,
           agreement: agreement_math.Agreement | None = None) -> ModelFacts:
    return ModelFacts(spec=spec, input_size=model.runtime.input_size, labels=model.labels,
                      model_id=model.model_id, description=model.runtime.description,
                      precision_used=getattr(model.runtime, 'arithmetic',
                                             model.runtime.precision),
                      agreement=agreement.to_json() if agreement else None)


def _compare(s: Settings, reference: LoadedModel, reduced: LoadedModel, images: np.ndarray,
             precision: str) -> agreement_math.Agreement:
    a = agreement_math.measure(reference.predict(images).probabilities,
                               reduced.predict(images).probabilities, precision)
    _log.info('%s on %d held-out images: top-1 %.3f, top-5 overlap %.3f, max prob diff '
              '%.4f', agreement_math.describe(precision), a.images, a.top1, a.top5_overlap,
              a.max_prob_diff)
    agreement_math.check(a, s.min_agreement)
    return a


def int8_spec(s: Settings, spec: ModelSpec, float_model: LoadedModel, sample: Sample,
              scratch: str | None = None) -> tuple[ModelSpec, set[str]]:
    """Convert (or find in --model_cache) the int8 model: the spec workers load it from,
    and the names of the images a cached conversion was calibrated on (empty for one made
    now, calibrated on this sample's own slice, apart from its held-out one; and for an
    entry that did not record them).

    `scratch`: where a new conversion goes instead of the cache (--dry_run).
    """
    from transforms.models import int8
    runtime = float_model.runtime
    # One line saying what to install, before anything is converted.
    int8.RUNTIMES[s.int8_runtime].converter_module().require()
    key = int8.cache_key(weights_sha256=runtime.weights_sha256, spec=spec,
                         input_size=runtime.input_size, calibration_source=sample.source,
                         runtime=int8.runtime_tag(s.int8_runtime))
    files = int8.cached_files(s.model_cache, key, s.int8_runtime)
    if files.usable():
        _log.info('int8: using %s from the model cache', files.model)
        calibrated = int8.calibration_names(files)
    else:
        files = int8.cached_files(scratch, key, s.int8_runtime) if scratch else files
        started = time.monotonic()
        content, head = int8.convert(spec, runtime, int8.Calibration(sample.calibration,
                                                                     sample.digest),
                                     s.int8_runtime)
        int8.store(files, content, head, sample.calibration_names)
        _log.info('int8: converted %s in %.1f s (calibrated on %d images) -> %s', spec.name,
                  time.monotonic() - started, len(sample.calibration), files.model)
        calibrated = set()
    return dataclasses.replace(
        spec, format=int8.RUNTIMES[s.int8_runtime].format, path=files.model, application=None,
        weights=None, preprocess=runtime.preprocess, outputs=runtime.output_kind), calibrated


def float_litert_facts(s: Settings, spec: ModelSpec, scratch: str | None = None) -> ModelFacts:
    """--float_runtime litert: the model's cached float32 conversion, made on a miss.

    A hit loads the .tflite and nothing else: TensorFlow is never imported. A miss
    loads the model on TensorFlow, converts it, compares the conversion with it on a
    held-out slice of the run's images, and caches it only when the gate passes
    (`scratch`: where a new conversion goes instead of the cache, on --dry_run).
    """
    from transforms.models import float_litert
    if spec.format not in float_litert.CONVERTS:
        able = ', '.join(FORMATS[n].described_as for n in float_litert.CONVERTS)
        raise ValueError(f'--float_runtime litert converts {able}; leave it out for '
                         f'{FORMATS[spec.format].described_as}')
    key = float_litert.cache_key(spec)  # hashes the model file: once
    files = float_litert.files_at(s.model_cache, key)
    if files.usable():
        _log.info('float32 on LiteRT: using %s from the model cache', files.model)
        agreement = float_litert.read_agreement(files)
        if agreement is not None:  # measured when it was made; this run's gate still holds
            agreement_math.check(agreement_math.Agreement(**agreement), s.min_agreement)
    else:
        files = float_litert.files_at(scratch, key) if scratch else files
        agreement = _convert_float_litert(s, spec, files).to_json()
        _free_launch_only_models()  # the TensorFlow source and the trial conversion
    converted_spec = float_litert.converted_spec(spec, files)
    model = _load(s, converted_spec, 'float32')
    _check_top_k(s, model)
    return dataclasses.replace(_facts(converted_spec, model), agreement=agreement)


def _convert_float_litert(s: Settings, spec: ModelSpec, files) -> agreement_math.Agreement:
    """Convert, check against TensorFlow on held-out images, then store (never a failed one)."""
    from transforms.models import float_litert
    started = time.monotonic()
    source = _load(s, spec, 'float32', for_workers=False, with_head=False)  # the source only
    size = source.runtime.input_size
    # Sampled first: an input with nothing decodable fails before a long conversion.
    sample = sample_images(s, size, held_out=s.agreement_images, calibration=0,
                           purpose='--float_runtime litert')
    content, head = float_litert.convert(spec, source.runtime, size)
    with tempfile.TemporaryDirectory(prefix='imagelabel-float-') as folder:
        trial = float_litert.files_at(folder, 'trial')
        float_litert.store(trial, content, head)
        converted = _load(s, float_litert.converted_spec(spec, trial), 'float32',
                          for_workers=False, with_head=False)
        agreement = _compare(s, source, converted, sample.held_out, float_litert.LABEL)
    float_litert.store(files, content, head, agreement.to_json())  # only a checked one
    _log.info('float32 on LiteRT: converted %s in %.1f s -> %s', spec.name,
              time.monotonic() - started, files.model)
    return agreement


def _free_launch_only_models() -> None:
    """Free the models loaded only to convert or to compare, now that they are dropped.

    A Keras model holds reference cycles, so only the cyclic collector frees it, and
    `imagelabel run` pauses that collector while it launches and then freezes what
    exists (pipeline.startup_gc): without this, such a model would stay in memory for
    the whole run. A full collection takes about 0.3 s, beside the seconds a
    conversion or a comparison takes.
    """
    gc.collect()


def _without_head(model: LoadedModel) -> LoadedModel:
    """The same loaded model giving its base classes: precisions are compared on those."""
    return dataclasses.replace(model, head=None)


def _check_top_k(s: Settings, model: LoadedModel) -> None:
    if s.top_k > model.num_classes and not s.head:  # a head's rows keep all its classes
        raise ValueError(f'--top_k {s.top_k} is more than the model\'s {model.num_classes} classes')


def load_model_facts(s: Settings, *, local: bool = True) -> ModelFacts:
    """Load the model once in the launcher: a bad model fails here, before any image is read.

    On --dry_run a conversion not cached yet is still made and checked (a model that
    cannot convert fails the dry run too), in a temporary folder that is gone when
    this returns: a dry run creates nothing, and finds a cached conversion as a run does.
    """
    with (tempfile.TemporaryDirectory(prefix='imagelabel-dry-run-') if s.dry_run
          else contextlib.nullcontext()) as scratch:
        return _model_facts(s, local, scratch)


def _model_facts(s: Settings, local: bool, scratch: str | None) -> ModelFacts:
    spec = _resolve(s)
    on_litert = (spec.format == 'tflite' or s.float_runtime == 'litert'
                 or (s.precision == 'int8' and s.int8_runtime == 'litert'))
    if s.interpreters and not on_litert:
        raise ValueError(f'--interpreters applies to LiteRT (.tflite, --precision int8, '
                         f'--float_runtime litert); {FORMATS[spec.format].described_as} runs '
                         f'on {"OpenVINO" if s.precision == "int8" else "TensorFlow"} here: '
                         'leave it out (--model_threads sets its threads)')
    converts = s.precision == 'int8' or s.float_runtime == 'litert'
    if converts and not local and '://' not in s.model_cache:
        raise ValueError(f'--model_cache {s.model_cache} is a local path, which workers on '
                         'a remote runner cannot read; use a gs:// URI')
    if s.float_runtime == 'litert':
        return float_litert_facts(s, spec, scratch)
    if s.precision == 'int8':
        fmt = FORMATS[spec.format]
        if not fmt.converts_to_int8:
            able = ', '.join(f.described_as for f in FORMATS.values() if f.converts_to_int8)
            raise ValueError(f'--precision int8 applies to {able}; {fmt.described_as} runs at '
                             'the precision it was converted with')
    # A --head fits one model_id, the one the workers run: a model loaded only to convert or
    # to compare is loaded without it, and precisions are compared on the base models.
    to_int8 = s.precision == 'int8'  # then this float32 model is only the conversion's source
    model = _load(s, spec, 'float32' if to_int8 else s.precision, for_workers=not to_int8,
                  with_head=not to_int8)
    _check_top_k(s, model)
    if s.precision == 'bf16' and model.runtime.precision != 'bf16':
        # The runtime warned that this CPU runs float32. Workers decide on their own CPU.
        _log.warning('--precision bf16: the agreement check needs bf16 units on the machine '
                     'that launches; workers that have them run bf16 unchecked (launch from '
                     'a machine of their CPU family to measure it)')
        return _facts(spec, model)
    if s.precision == 'float32':
        return _facts(spec, model)
    if s.precision == 'bf16':
        sample = sample_images(s, model.runtime.input_size, held_out=s.agreement_images,
                               calibration=0)
        reference = _load(s, spec, 'float32', for_workers=False, with_head=False)
        facts = _facts(spec, model, _compare(s, reference, _without_head(model),
                                             sample.held_out, 'bf16'))
        del reference
        _free_launch_only_models()
        return facts
    sample = sample_images(s, model.runtime.input_size, held_out=s.agreement_images,
                           calibration=s.calibration_images)
    lowered_spec, calibrated = int8_spec(s, spec, model, sample, scratch)
    held_out, left_out = unseen(sample, calibrated)
    if left_out:
        _log.info('int8: %d of the %d held-out images were in the cached conversion\'s '
                  'calibration set (an earlier night\'s sample); agreement is measured on '
                  'the other %d', left_out, len(sample.held_out), len(held_out))
    lowered = _load(s, lowered_spec, 'int8')
    facts = _facts(lowered_spec, lowered, _compare(s, model, _without_head(lowered),
                                                   held_out, 'int8'))
    del model  # the float32 source
    _free_launch_only_models()
    return facts


def summary_extras(result, started: float | None, model: ModelFacts) -> dict:
    """The RunSummary fields the launcher adds: start-up time, CPU, precision, agreement.

    Called when the run has finished: `labeling_seconds` runs from the first batch
    entering the model to now (outputs written), the steady part of the run.
    """
    from pipeline.summary import first_batch_unix_ms
    from pipeline.hints import precision_hint
    from transforms.models import float_litert
    first = first_batch_unix_ms(result)
    cpu = this_cpu()
    fmt = FORMATS[model.spec.format]
    available = {p for p, ok in (('bf16', fmt.supports_bf16), ('int8', fmt.converts_to_int8),
                                 (float_litert.LABEL, model.spec.format in float_litert.CONVERTS))
                 if ok}
    return dict(
        startup_seconds=(round(first / 1000 - started, 3) if first and started else None),
        labeling_seconds=round(now() - first / 1000, 3) if first else None,
        precision=model.precision_used, cpu=cpu.model, cpu_units=cpu.units,
        precision_hint=precision_hint(cpu, model.precision_used, available),
        agreement=model.agreement)
