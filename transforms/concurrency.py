"""Bounded look-ahead: run a per-element function on a thread pool inside a DoFn.

Why: on the DirectRunner, and inside one fused Dataflow stage, a bundle runs in
one thread, depth first. Reading (I/O bound) and decoding (Pillow releases the
GIL) would otherwise sit idle while the model runs, and the model would sit idle
while they run. Keeping up to `lookahead` elements in flight lets the pool work
on the next batch while the downstream RunInference call is busy with this one.

Outputs keep their input's timestamp and window, and order is preserved, so a
stage built on this behaves like a plain `Map` to everything around it, and
batches downstream hold the same images from run to run. The price: an element
stuck in retries holds back those behind it once `lookahead` more are waiting.
Memory is bounded by `lookahead` results per DoFn instance.
"""
from __future__ import annotations

import collections
import concurrent.futures
from typing import Any, Iterator

import apache_beam as beam
from apache_beam.utils.windowed_value import WindowedValue


class LookaheadDoFn(beam.DoFn):
    """Applies `self.work(element)` on `threads` threads, `lookahead` at a time.

    Subclasses implement `work` (runs on a pool thread, must not raise for
    expected failures) and `outputs` (turns a result into zero or more outputs,
    possibly `TaggedOutput`s; runs on the bundle's thread). Beam metrics only
    count on the bundle's thread: `work` returns what to count, `outputs` counts it.
    """

    def __init__(self, *, threads: int, lookahead: int):
        if threads < 1 or lookahead < 0:
            raise ValueError('threads must be >= 1 and lookahead >= 0')
        self._threads = threads
        self._lookahead = lookahead
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pending: collections.deque = collections.deque()

    def work(self, element: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def outputs(self, result: Any) -> Iterator[Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def setup(self):
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=self._threads, thread_name_prefix=type(self).__name__)

    def start_bundle(self):
        self._pending = collections.deque()

    def process(self, element: Any, timestamp=beam.DoFn.TimestampParam,
                window=beam.DoFn.WindowParam) -> Iterator[Any]:
        self._pending.append((self._pool.submit(self.work, element), timestamp, window))
        while len(self._pending) > self._lookahead or (
                self._pending and self._pending[0][0].done()):
            yield from self._emit(self._pending.popleft())

    def finish_bundle(self) -> Iterator[Any]:
        while self._pending:
            yield from self._emit(self._pending.popleft())

    def teardown(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _emit(self, item: tuple) -> Iterator[Any]:
        future, timestamp, window = item
        for out in self.outputs(future.result()):
            if isinstance(out, beam.pvalue.TaggedOutput):
                yield beam.pvalue.TaggedOutput(
                    out.tag, WindowedValue(out.value, timestamp, (window,)))
            else:
                yield WindowedValue(out, timestamp, (window,))
