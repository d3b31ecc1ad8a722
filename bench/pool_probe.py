"""Where a LiteRT run's time goes between model calls: `python bench/pool_probe.py RUN-FLAGS`.

Runs `pipeline.run` with InterpreterPool.run timed (no import hook, no sampling):
from the first batch's start to the last batch's end (the span), how much is
inside the model call, how much of that is a batch's tail (one interpreter done,
the other still on its last image), and how much is outside it: the main thread
turning results into rows and Parquet and gathering the next batch, while the
other interpreter waits.

It also sums the thread CPU time of every `decode_image` call (on the decode
threads) and of every interpreter `invoke` (on the interpreter threads): what one
image's decode and invoke (with setting its input and reading its outputs) cost
on one thread *during this run*, from which
cores_limit.py makes a bound measured in the same seconds as the run itself (a
clock read before and after each call: about 1 microsecond, against 2.6 ms of
decode and 14 ms of invoke). Prints one line:

    BENCH_RESULT {"span_s": ..., "in_model_s": ..., "tails_s": ..., "between_batches_s": ...,
                  "batches": ..., "images": ..., "decode_calls": ..., "decode_cpu_s": ...,
                  "invoke_calls": ..., "invoke_cpu_s": ..., "tensor_io_calls": ...,
                  "tensor_io_cpu_s": ...}
"""
import atexit
import json
import runpy
import sys
import time

import transforms.decode as decode
import transforms.models.interpreters as interpreters
from workers import RESULT_MARK  # bench/ is this script's folder

_pool_run = interpreters.InterpreterPool.run
_drain = interpreters.InterpreterPool._drain  # noqa: SLF001
_t = {'batches': 0, 'images': 0, 'in_model_s': 0.0, 'tails_s': 0.0, 'first': None, 'last': None}
_ends: list[float] = []
_cpu: list[tuple[str, float]] = []  # (step, thread CPU s) per call; list.append is atomic


def _thread_cpu(step: str, fn):
    """fn, with the thread CPU time of each call appended to _cpu under `step`."""
    def timed(*args, **kwargs):
        start = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            _cpu.append((step, time.thread_time() - start))
    return timed


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
        'batches': _t['batches'], 'images': _t['images'],
        **{f'{step}_{what}': (round(sum(t for s, t in _cpu if s == step), 4) if what == 'cpu_s'
                              else sum(1 for s, _ in _cpu if s == step))
           for step in ('decode', 'invoke', 'tensor_io') for what in ('calls', 'cpu_s')}}), flush=True)


interpreters.InterpreterPool.run = _timed_run
interpreters.InterpreterPool._drain = _timed_drain  # noqa: SLF001
decode.decode_image = _thread_cpu('decode', decode.decode_image)  # what _DecodeDoFn calls
from ai_edge_litert.interpreter import Interpreter  # noqa: E402 - the class the pool makes
Interpreter.invoke = _thread_cpu('invoke', Interpreter.invoke)
# The bound's invoke also sets the input and reads the outputs: counted apart, added there.
Interpreter.set_tensor = _thread_cpu('tensor_io', Interpreter.set_tensor)
Interpreter.get_tensor = _thread_cpu('tensor_io', Interpreter.get_tensor)
atexit.register(_report)
sys.argv = ['pipeline.run', *sys.argv[1:]]
runpy.run_module('pipeline.run', run_name='__main__')
