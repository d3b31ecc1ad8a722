"""Flags, as Beam PipelineOptions, and their validation.

Every flag is declared once here; `imagelabel run --help`, `python -m
pipeline.run --help` and the Flex Template metadata all read this list. Values
are checked when parsed: a contradictory or unknown choice is a ValueError that
says how to fix it, before any worker starts.
"""
from __future__ import annotations

import dataclasses
import datetime
import os
import re
import uuid

from apache_beam.options.pipeline_options import PipelineOptions, TestOptions

from transforms.decode import DEFAULT_MAX_PIXELS, ResizeRecipe
from transforms.models import OUTPUT_KINDS, PRECISIONS, PREPROCESSORS, REGISTRY, path_kinds
from transforms.models.formats import batch_size_help
from transforms.read import DEFAULT_MAX_BYTES, DEFAULT_MAX_INFLIGHT_BYTES
from transforms.sinks import RunInfo, Sink, add_sink_flags, sinks_for


MODEL_HELP = (f'A named model ({", ".join(sorted(REGISTRY))}) or {path_kinds()} '
              '(local or gs://).')


class ImageLabelOptions(PipelineOptions):
    """imagelabel's own flags; any other Beam flag (--runner, --project...) passes through."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            '--input', help='Images to label: a directory (recursive), a glob such as '
            '"photos/**/*.jpg", or a manifest (.txt one URI per line, .csv with a uri column). '
            'Local paths or gs://.')
        parser.add_argument('--model', default='inception_v3', help=MODEL_HELP)
        parser.add_argument(
            '--weights', default=None,
            help='Weights file for a named model (local or gs://); default: Keras '
            'downloads the ImageNet weights on first use.')
        parser.add_argument(
            '--labels_file', default=None,
            help='Class names, one per line; default: the 1000 ImageNet names shipped '
            'with imagelabel. (imagelabel run also takes it as --labels FILE; Beam\'s own '
            '--labels key=value or --labels \'{"key": "value"}\' still sets Dataflow job '
            'labels.)')
        parser.add_argument('--top_k', type=int, default=5,
                            help='How many labels to keep per image.')
        parser.add_argument(
            '--head', default=None,
            help='A classifier head from imagelabel train-head (.keras, local or gs://): '
            'rows hold its classes (top-k, at most all of them), computed from the '
            'model\'s embedding in the same forward pass.')
        parser.add_argument(
            '--resize', default=ResizeRecipe.CROP.value, choices=[r.value for r in ResizeRecipe],
            help='plain: stretch the whole image to the input size (TF label_image); crop: '
            'keep aspect, central 87.5%% of the shorter side (ImageNet evaluation).')
        parser.add_argument(
            '--preprocess', default=None, choices=sorted(PREPROCESSORS),
            help='Pixel normalisation; default: the model\'s own (inception = [-1, 1]; '
            'raw for uint8 .tflite models).')
        parser.add_argument(
            '--model_outputs', default='auto', choices=OUTPUT_KINDS,
            help='Whether the model emits logits or probabilities; auto detects it.')
        parser.add_argument(
            '--batch_size', type=int, default=None,
            help=f'Images per model call. Default by model: {batch_size_help()} (those invoke '
            'one image at a time, and a bigger batch leaves their interpreters less waiting '
            'at its end).')
        parser.add_argument(
            '--precision', default='float32', choices=PRECISIONS,
            help='bf16 runs Keras models through oneDNN\'s bf16 graph rewrite (much faster '
            'on CPUs with AVX512-BF16 or AMX); int8 quantizes a Keras or SavedModel model '
            'at launch (calibrated on the run\'s own images, cached in --model_cache) and '
            'runs it on LiteRT or OpenVINO (--int8_runtime). Both are checked against float32 '
            'at launch (--min_agreement).')
        add_precision_flags(parser)
        parser.add_argument('--model_threads', type=int, default=0,
                            help='Threads for the model (for .tflite and int8: per '
                            'interpreter, and one interpreter unless --interpreters says '
                            'more); 0 lets the runtime choose.')
        parser.add_argument('--interpreters', type=int, default=0,
                            help='LiteRT interpreters per worker process (.tflite, int8 and '
                            '--float_runtime litert), each running a slice of every batch; '
                            '0: one single-threaded interpreter per core (measured fastest '
                            'while decode shares the cores: bench/cores_limit.py).')
        parser.add_argument('--decode_threads', type=int, default=2,
                            help='Threads decoding images ahead of the model, per worker.')
        parser.add_argument('--max_pixels', type=int, default=DEFAULT_MAX_PIXELS,
                            help='Reject images declaring more pixels than this, before '
                            'decoding them (decompression bombs).')
        parser.add_argument('--max_bytes', type=int, default=DEFAULT_MAX_BYTES,
                            help='Reject image files larger than this many bytes.')
        parser.add_argument('--max_inflight_bytes', type=int, default=DEFAULT_MAX_INFLIGHT_BYTES,
                            help='Bytes of images each read-ahead (read, then decode) may '
                            'hold per worker thread before it waits: bounds memory on '
                            'folders of huge images.')
        parser.add_argument('--read_retries', type=int, default=5,
                            help='Attempts per image on transient storage errors '
                            '(timeouts, 429, 5xx), with exponential backoff.')
        parser.add_argument('--run_id', default=None,
                            help='Identifier written to every row; default: UTC time + '
                            'random suffix.')
        parser.add_argument('--run_date', default=None,
                            help='The run\'s date, YYYY-MM-DD: the partition its rows go to '
                            '(OUTPUT/run_date=.../, and BigQuery\'s run_date); re-running a '
                            'date replaces that partition. Default: today (UTC).')
        parser.add_argument('--skip_existing', action='store_true', default=False,
                            help='Label only what is new since the earlier dates under '
                            '--output: unchanged objects are not read, copies of labeled '
                            'content are copied, earlier transient failures are retried.')
        parser.add_argument('--retry_errors', action='store_true', default=False,
                            help='With --skip_existing, also retry earlier permanent failures '
                            '(undecodable, too large) whose object has not changed.')
        parser.add_argument(
            '--share_model', action='store_true', default=False,
            help='Load one copy of the model per machine, shared by all its SDK worker '
            'processes (Beam\'s large_model), instead of one per process: for models '
            'too big to hold once per vCPU. Batches then cross a local socket.')
        parser.add_argument(
            '--model_copies', type=int, default=None,
            help='How many copies of the model each machine holds, shared by its SDK '
            'processes (Beam\'s model_copies); implies --share_model. Default: one per '
            'process, or one per machine with --share_model.')
        add_sink_flags(parser)


#: --dry_run is Beam's own flag (TestOptions; DataflowRunner builds the job and does not
#: submit it), so ImageLabelOptions cannot declare it again (argparse: conflicting option
#: string). We honour it on every runner and document it with our flags.
DRY_RUN_CHOICES = ('true', 'false')


def add_launcher_flags(parser) -> None:
    """Every flag the launcher takes: ours, plus Beam's --dry_run (for --help and metadata)."""
    ImageLabelOptions._add_argparse_args(parser)  # noqa: SLF001
    parser.add_argument(
        '--dry_run', default='false', choices=DRY_RUN_CHOICES,
        help='true: check the flags, the input and the model, build the whole job graph and '
        'serialize it as a runner would, then stop: nothing is labeled, written or submitted '
        '(a conversion or agreement check at launch still reads its sample of images, and '
        'a conversion it makes is checked in a temporary folder). A bare --dry_run means '
        'true.')


def dry_run_from(options: PipelineOptions) -> bool:
    """Beam's --dry_run as a bool (Beam keeps the string, and 'false' is truthy)."""
    value = options.view_as(TestOptions).dry_run
    if value in (None, False, True):
        return bool(value)
    if str(value).lower() not in DRY_RUN_CHOICES:
        raise ValueError(f'--dry_run takes true or false, got {value!r}')
    return str(value).lower() == 'true'


def add_precision_flags(parser) -> None:
    """The flags of reduced precision: int8 calibration, its cache, the agreement gate."""
    from transforms.models.float_litert import RUNTIMES as FLOAT_RUNTIMES
    from transforms.models.int8 import RUNTIMES
    from transforms.models.model_cache import default_model_cache
    parser.add_argument('--calibration_images', type=int, default=200,
                        help='int8: images of the run\'s own input (a seeded sample) to '
                        'calibrate the quantization on.')
    parser.add_argument('--model_cache', default=default_model_cache(),
                        help='int8 and --float_runtime litert: folder (local or gs://) where '
                        'converted models are kept by (model, calibration set, runtime), so a '
                        'scheduled run converts once; workers only load from it.')
    parser.add_argument('--float_runtime', default='tensorflow', choices=FLOAT_RUNTIMES,
                        help='float32 Keras and SavedModel models: tensorflow runs them as '
                        'they are; litert converts one once at launch (cached in '
                        '--model_cache, checked against TensorFlow with --min_agreement) '
                        'and runs the .tflite on LiteRT '
                        '(1.3x TensorFlow end to end on AMD Zen 3, AVX2); a run that finds '
                        'its conversion cached imports neither TensorFlow nor Keras.')
    parser.add_argument('--int8_runtime', default='litert', choices=sorted(RUNTIMES),
                        help='int8: what runs the quantized model. litert (always installed) '
                        'or openvino (NNCF quantization; uses AVX512-VNNI and AMX where the '
                        'CPU has them; pip install \'imagelabel[openvino]\').')
    parser.add_argument('--agreement_images', type=int, default=64,
                        help='int8/bf16: held-out images of the input (seeded, not used for '
                        'calibration) on which reduced precision is compared with float32 at '
                        'launch; --float_runtime litert: on which its conversion is compared '
                        'with TensorFlow when it is made.')
    parser.add_argument('--min_agreement', type=float, default=0.9,
                        help='int8/bf16 (and --float_runtime litert, against TensorFlow): the '
                        'lowest top-1 agreement with float32 the run accepts; below it the run '
                        'stops at launch.')


@dataclasses.dataclass(frozen=True)
class Settings:
    """Validated imagelabel flags: what the graph is built from."""
    input: str
    output: str | None
    model: str
    weights: str | None
    labels: str | None
    top_k: int
    resize: ResizeRecipe
    preprocess: str | None
    model_outputs: str
    batch_size: int | None  # None: the model's format chooses (formats.batch_size_for)
    precision: str
    model_threads: int | None
    decode_threads: int
    max_pixels: int
    max_bytes: int
    read_retries: int
    max_inflight_bytes: int
    run_id: str
    run_date: str
    skip_existing: bool
    retry_errors: bool
    share_model: bool = False         # one model per machine (Beam's large_model)
    model_copies: int | None = None   # N models per machine, shared (Beam's model_copies)
    dry_run: bool = False             # build and validate the graph, do not run it
    head: str | None = None
    calibration_images: int = 200
    model_cache: str = ''
    agreement_images: int = 64
    min_agreement: float = 0.9
    interpreters: int | None = None   # LiteRT interpreters per process; None: one per core
    int8_runtime: str = 'litert'      # litert or openvino (transforms.models.int8.RUNTIMES)
    float_runtime: str = 'tensorflow'  # or litert: a cached float32 conversion (float_litert)


def new_run_id() -> str:
    now = datetime.datetime.now(datetime.timezone.utc)
    return f'{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}'


#: What a --run_id may hold: it names files (the write probe) and rows, never a path.
RUN_ID_SHAPE = r'^[-_.:A-Za-z0-9]+$'


def settings_from(options: PipelineOptions) -> Settings:
    """Check the flags that need no I/O; raise ValueError saying how to fix each."""
    o = options.view_as(ImageLabelOptions)
    if not o.input:
        raise ValueError('--input is required: a directory, a glob or a manifest of image URIs')
    if o.batch_size is not None and o.batch_size < 1:
        raise ValueError(f'--batch_size must be a positive integer, got {o.batch_size} (leave '
                         'it out for the model\'s default)')
    positive = dict(top_k=o.top_k, max_pixels=o.max_pixels,
                    max_bytes=o.max_bytes, read_retries=o.read_retries,
                    max_inflight_bytes=o.max_inflight_bytes,
                    decode_threads=o.decode_threads, calibration_images=o.calibration_images,
                    agreement_images=o.agreement_images)
    if o.run_id is not None and not re.fullmatch(RUN_ID_SHAPE, o.run_id):
        raise ValueError(f'--run_id {o.run_id!r} may hold only letters, digits and - _ . : '
                         '(it names files and rows)')
    if o.retry_errors and not o.skip_existing:
        raise ValueError('--retry_errors only applies with --skip_existing (without it, '
                         'every image is read and labeled anyway)')
    if o.skip_existing and not o.output:
        raise ValueError('--skip_existing compares with the earlier runs under --output; '
                         'give --output')
    for name, value in positive.items():
        if value is None or value < 1:
            raise ValueError(f'--{name} must be a positive integer, got {value}')
    if o.model_copies is not None and o.model_copies < 1:
        raise ValueError(f'--model_copies must be a positive integer, got {o.model_copies} '
                         '(leave it out for one model per process)')
    if o.min_agreement is None or not 0.0 <= o.min_agreement <= 1.0:
        raise ValueError(f'--min_agreement must be between 0 and 1 (a fraction of images), '
                         f'got {o.min_agreement}')
    if not o.model_cache:
        raise ValueError('--model_cache must name a folder (local or gs://)')
    if '://' not in o.model_cache and os.path.exists(o.model_cache) and not os.path.isdir(
            o.model_cache):
        raise ValueError(f'--model_cache {o.model_cache} is a file; it must name a folder '
                         '(made if missing)')
    if o.int8_runtime != 'litert' and o.precision != 'int8':
        raise ValueError(f'--int8_runtime {o.int8_runtime} applies to --precision int8 only; '
                         'add --precision int8, or leave --int8_runtime out')
    if o.float_runtime != 'tensorflow' and o.precision != 'float32':
        raise ValueError(f'--float_runtime {o.float_runtime} applies to --precision float32 '
                         f'only (--precision {o.precision} chooses its own runtime); leave one '
                         'of them out')
    for name in ('model_threads', 'interpreters'):
        value = getattr(o, name)
        if value is not None and value < 0:
            raise ValueError(f'--{name} must be >= 0 (0: chosen from the core count), '
                             f'got {value}')
    return Settings(
        input=o.input, output=(o.output.rstrip('/') or '/') if o.output else None, model=o.model, weights=o.weights,
        labels=o.labels_file, top_k=o.top_k, resize=ResizeRecipe(o.resize),
        preprocess=o.preprocess, model_outputs=o.model_outputs, batch_size=o.batch_size,
        precision=o.precision, model_threads=o.model_threads or None,
        decode_threads=o.decode_threads, max_pixels=o.max_pixels, max_bytes=o.max_bytes,
        read_retries=o.read_retries, max_inflight_bytes=o.max_inflight_bytes,
        run_id=o.run_id or new_run_id(), run_date=parse_run_date(o.run_date),
        skip_existing=bool(o.skip_existing), retry_errors=bool(o.retry_errors),
        share_model=bool(o.share_model) or o.model_copies is not None,
        model_copies=o.model_copies, dry_run=dry_run_from(options), head=o.head,
        calibration_images=o.calibration_images, model_cache=o.model_cache.rstrip('/') or '/',
        agreement_images=o.agreement_images, min_agreement=o.min_agreement,
        interpreters=o.interpreters or None, int8_runtime=o.int8_runtime,
        float_runtime=o.float_runtime)


def parse_run_date(value: str | None) -> str:
    """YYYY-MM-DD, checked; today in UTC when not given."""
    if not value:
        return datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    try:
        return datetime.date.fromisoformat(value).isoformat()
    except ValueError:
        raise ValueError(f'--run_date {value!r} is not a date; use YYYY-MM-DD') from None


def sinks_from(options: PipelineOptions, s: Settings, *, local: bool) -> list[Sink]:
    """The sinks the options ask for, each validating its own flags."""
    return sinks_for(options.view_as(ImageLabelOptions),
                     RunInfo(run_id=s.run_id, run_date=s.run_date, local=local))
