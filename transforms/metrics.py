"""Every metric name, in one place.

Stages count with `counter(NAME)`; the launcher reads them back by the same
constants into `summary.json`. Nobody re-types a metric name as a string.
"""
from __future__ import annotations

from apache_beam.metrics import Metrics

#: Beam metrics namespace of every imagelabel counter.
NAMESPACE = 'imagelabel'

LISTED = 'listed'                  # URIs named by --input, duplicates included
INPUTS = 'inputs'                  # distinct URIs
LABELED = 'labeled'                # label rows made by the model
SKIPPED = 'skipped'                # --skip_existing: unchanged since an earlier run, not read
REUSED = 'reused'                  # --skip_existing: same content labeled before, row copied
RETRIED = 'retried'                # --skip_existing: an earlier transient failure tried again
ERRORS = 'errors'                  # error rows made
READ_RETRIES = 'read_retries'      # transient read failures retried
BYTES_READ = 'bytes_read'
DECODED = 'decoded'
INFERENCE_BATCHES_RETRIED = 'inference_batches_retried'
STORAGE_CLIENTS = 'storage_clients'  # gs:// clients made by the read stage
INFLIGHT_BYTES = 'inflight_bytes'    # distribution: bytes held by a read-ahead, its max the peak
BATCH_START_UNIX_MS = 'batch_start_unix_ms'  # distribution: its min is the first batch

_ERROR_PREFIX = 'errors_'


def counter(name: str):
    return Metrics.counter(NAMESPACE, name)


def distribution(name: str):
    return Metrics.distribution(NAMESPACE, name)


def error_class_counter(stage: str, error: str):
    """One counter per (stage, class): `errors_read_not_found`..."""
    return Metrics.counter(NAMESPACE, f'{_ERROR_PREFIX}{stage}_{error}')


def errors_by_class(counts: dict[str, int]) -> dict[str, int]:
    """{'read/not_found': 2, ...} from the per-class counters (stage names hold no '_')."""
    return {k[len(_ERROR_PREFIX):].replace('_', '/', 1): v for k, v in counts.items()
            if k.startswith(_ERROR_PREFIX) and v}
