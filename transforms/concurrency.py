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
Memory is bounded per DoFn instance by `lookahead` elements and, when given,
by `max_inflight_bytes`: once the elements held (inputs waiting, results not yet
emitted) weigh more than that, the stage emits before it takes more work. So a
folder of 40 MB images holds about `max_inflight_bytes` plus one image per
thread, not `lookahead` x 40 MB.
"""
from __future__ import annotations

import collections
import concurrent.futures
import threading
from typing import Any, Iterator

import apache_beam as beam
from apache_beam.utils.windowed_value import WindowedValue


class LookaheadDoFn(beam.DoFn):
    """Applies `self.work(element)` on `threads` threads, `lookahead` at a time.

    Subclasses implement `work` (runs on a pool thread, must not raise for
    expected failures) and `outputs` (turns a result into zero or more outputs,
    possibly `TaggedOutput`s; runs on the bundle's thread). Beam metrics only
    count on the bundle's thread: `work` returns what to count, `outputs` counts it.
    Subclasses that hold big payloads say how big with `element_bytes` and
    `result_bytes`, for the byte bound.
    """

    def __init__(self, *, threads: int, lookahead: int, max_inflight_bytes: int | None = None):
        if threads < 1 or lookahead < 0:
            raise ValueError('threads must be >= 1 and lookahead >= 0')
        if max_inflight_bytes is not None and max_inflight_bytes < 1:
            raise ValueError('max_inflight_bytes must be positive')
        self._threads = threads
        self._lookahead = lookahead
        self._max_inflight_bytes = max_inflight_bytes
        self._size_hint = 0
        self.peak_inflight_bytes = 0
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pending: collections.deque = collections.deque()
        self._bytes_lock: threading.Lock | None = None  # made in setup: locks do not pickle
        self._reset_totals()

    def _reset_totals(self) -> None:
        self._held_bytes = 0   # inputs of pending elements
        self._done_bytes = 0   # results landed, not yet emitted
        self._running = 0      # results not landed yet (counted at the size hint)

    def work(self, element: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def outputs(self, result: Any) -> Iterator[Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def element_bytes(self, element: Any) -> int:
        """Bytes an input holds while it waits for its result (0: not counted)."""
        return 0

    def result_bytes(self, result: Any) -> int:
        """Bytes a finished result holds until it is emitted (0: not counted)."""
        return 0

    def inflight_bytes(self) -> int:
        """What the pending elements weigh: inputs, results done, and results to come.

        A result still being computed is counted at the largest size seen so far:
        otherwise every queued read would count as 0 until it lands, and a slow
        head of the queue would let the rest pile up unbounded. Kept as running
        totals (updated when a result lands and when it is emitted): summing the
        queue on every element cost a third of the bundle thread's time.
        """
        with self._bytes_lock:
            return self._held_bytes + self._done_bytes + self._running * self._size_hint

    def _work_and_count(self, element: Any) -> tuple[Any, int]:
        """Runs on a pool thread: the work, then its result moved from running to done.

        The totals change before the future completes, so by the time `_emit` has
        the result they already count it as done, in one order only.
        """
        size = 0
        try:
            result = self.work(element)
            size = self.result_bytes(result)
            return result, size
        finally:  # a failing `work` lands with size 0; its error surfaces in `_emit`
            with self._bytes_lock:
                self._size_hint = max(self._size_hint, size)
                self._running -= 1
                self._done_bytes += size

    def _over_budget(self) -> bool:
        if self._max_inflight_bytes is None or not self._pending:
            return False
        if self._size_hint == 0 and len(self._pending) > 1 and (
                type(self).result_bytes is not LookaheadDoFn.result_bytes):
            return True  # no result sized yet: learn one before queueing more
        held = self.inflight_bytes()
        self.peak_inflight_bytes = max(self.peak_inflight_bytes, held)
        return held > self._max_inflight_bytes

    def setup(self):
        self._bytes_lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=self._threads, thread_name_prefix=type(self).__name__)

    def start_bundle(self):
        self._pending = collections.deque()
        self._reset_totals()

    def process(self, element: Any, timestamp=beam.DoFn.TimestampParam,
                window=beam.DoFn.WindowParam) -> Iterator[Any]:
        held = self.element_bytes(element) if self._max_inflight_bytes else 0
        with self._bytes_lock:  # before submitting: the task may land at once
            self._held_bytes += held
            self._running += 1
        self._pending.append((self._pool.submit(self._work_and_count, element),
                              timestamp, window, held))
        # Keep the queue full: emitting a result as soon as it is done would run the
        # stages downstream (the model) while the pool has nothing queued to work on.
        while len(self._pending) > self._lookahead or self._over_budget():
            yield from self._emit(self._pending.popleft())

    def finish_bundle(self) -> Iterator[Any]:
        while self._pending:
            yield from self._emit(self._pending.popleft())

    def teardown(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _emit(self, item: tuple) -> Iterator[Any]:
        future, timestamp, window, held = item
        result, size = future.result()
        with self._bytes_lock:
            self._held_bytes -= held
            self._done_bytes -= size
        for out in self.outputs(result):
            if isinstance(out, beam.pvalue.TaggedOutput):
                yield beam.pvalue.TaggedOutput(
                    out.tag, WindowedValue(out.value, timestamp, (window,)))
            else:
                yield WindowedValue(out, timestamp, (window,))
