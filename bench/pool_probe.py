"""Where a LiteRT run's time goes between model calls: `python bench/pool_probe.py RUN-FLAGS`.

Runs `pipeline.run` with InterpreterPool.run timed (no import hook, no sampling):
from the first batch's start to the last batch's end (the span), how much is
inside the model call, how much of that is a batch's tail (one interpreter done,
the other still on its last image), and how much is outside it: the main thread
turning results into rows and Parquet and gathering the next batch, while the
other interpreter waits. Prints one line:

    BENCH_RESULT {"span_s": ..., "in_model_s": ..., "tails_s": ..., "between_batches_s": ...,
                  "batches": ..., "images": ...}
"""
import atexit
import json
import runpy
import sys
import time

import transforms.models.interpreters as interpreters
from workers import RESULT_MARK  # bench/ is this script's folder

_pool_run = interpreters.InterpreterPool.run
_drain = interpreters.InterpreterPool._drain  # noqa: SLF001
_t = {'batches': 0, 'images': 0, 'in_model_s': 0.0, 'tails_s': 0.0, 'first': None, 'last': None}
_ends: list[float] = []


def _timed_drain(self, one, taken, n):
    try:
        return _drain(self, one, taken, n)
    finally:
        _ends.append(time.perf_counter())


def _timed_run(self, n, one):
    _ends.clear()
    start = time.perf_counter()
    try:
        return _pool_run(self, n, one)
    finally:
        end = time.perf_counter()
        _t['batches'] += 1
        _t['images'] += n
        _t['in_model_s'] += end - start
        if len(_ends) > 1:
            _t['tails_s'] += max(_ends) - min(_ends)
        _t['first'] = _t['first'] or start
        _t['last'] = end


def _report() -> None:
    span = (_t['last'] - _t['first']) if _t['first'] else 0.0
    print(RESULT_MARK + json.dumps({
        'span_s': round(span, 3), 'in_model_s': round(_t['in_model_s'], 3),
        'tails_s': round(_t['tails_s'], 3),
        'between_batches_s': round(span - _t['in_model_s'], 3),
        'batches': _t['batches'], 'images': _t['images']}), flush=True)


interpreters.InterpreterPool.run = _timed_run
interpreters.InterpreterPool._drain = _timed_drain  # noqa: SLF001
atexit.register(_report)
sys.argv = ['pipeline.run', *sys.argv[1:]]
runpy.run_module('pipeline.run', run_name='__main__')
