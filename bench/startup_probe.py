"""Start-up of any checkout, timed from outside: `python bench/startup_probe.py RUN-FLAGS`.

Checkouts older than summary.json's `startup_seconds` cannot report it, so
`bench.py --only startup --baseline_root` runs this probe in both: it runs
`pipeline.run` from the checkout on PYTHONPATH and marks when the first batch
enters Beam's RunInference DoFn (the same moment summary.json uses). It adds no
import hook, so it costs the run nothing. Prints one line:

    BENCH_RESULT {"from_process_s": ..., "from_prepare_s": ...}

from_process_s: from this probe's first statement (the interpreter is up) to the
first batch: what the user waits. from_prepare_s: from `pipeline.launch.prepare`
(after Beam's import) to the first batch.
"""
import time

PROBE_STARTED = time.time()

import atexit  # noqa: E402 - the clock starts first
import json  # noqa: E402
import runpy  # noqa: E402
import sys  # noqa: E402

import apache_beam.ml.inference.base as inference  # noqa: E402

import pipeline.launch as launch  # noqa: E402
from workers import RESULT_MARK  # noqa: E402 - bench/ is this script's folder
_marks: dict[str, float] = {}
_run_inference = inference._RunInferenceDoFn._run_inference  # noqa: SLF001
_prepare = launch.prepare


def _first_batch(self, *args, **kwargs):
    _marks.setdefault('first_batch', time.time())
    return _run_inference(self, *args, **kwargs)


def _timed_prepare(*args, **kwargs):
    _marks.setdefault('prepare', time.time())
    return _prepare(*args, **kwargs)


def _report() -> None:
    first = _marks.get('first_batch')
    print(RESULT_MARK + json.dumps({
        'from_process_s': round(first - PROBE_STARTED, 3) if first else None,
        'from_prepare_s': round(first - _marks['prepare'], 3) if first and 'prepare' in _marks
        else None}), flush=True)


inference._RunInferenceDoFn._run_inference = _first_batch  # noqa: SLF001
launch.prepare = _timed_prepare
atexit.register(_report)
sys.argv = ['pipeline.run', *sys.argv[1:]]
runpy.run_module('pipeline.run', run_name='__main__')
