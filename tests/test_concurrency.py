"""LookaheadDoFn on its own: every element once, doubled; timestamps, windows and tags kept;
never more than `lookahead + 1` elements in work at once.

`work` sleeps a random few milliseconds so results complete out of order, which is
what would expose an output paired with the wrong element's timestamp or window.
"""
from __future__ import annotations

import random
import threading
import time

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import FixedWindows, TimestampedValue

from transforms.concurrency import LookaheadDoFn

TestPipeline.__test__ = False  # a Beam class, not a pytest test class

N = 60


class InFlight:
    """Counts work() calls running right now, and the most seen at once.

    Module-level state: the runner pickles DoFns, but the DirectRunner runs them in
    this process, so every copy updates the same counter.
    """
    lock = threading.Lock()
    now = 0
    peak = 0
    calls = 0

    @classmethod
    def reset(cls):
        with cls.lock:
            cls.now = cls.peak = cls.calls = 0

    @classmethod
    def enter(cls):
        with cls.lock:
            cls.now += 1
            cls.calls += 1
            cls.peak = max(cls.peak, cls.now)

    @classmethod
    def leave(cls):
        with cls.lock:
            cls.now -= 1


class Double(LookaheadDoFn):
    """work: x -> 2x after a random short sleep; outputs: the result as is."""

    def work(self, x):
        InFlight.enter()
        try:
            time.sleep(random.uniform(0.0005, 0.004))
            return x * 2
        finally:
            InFlight.leave()

    def outputs(self, result):
        yield result


class DoubleOddsTagged(Double):
    """Odd inputs' results go to the `odd` output (x = 0 also to `zero`), the rest to main."""

    def outputs(self, result):
        x = result // 2
        if x == 0:
            yield beam.pvalue.TaggedOutput('zero', result)
        if x % 2:
            yield beam.pvalue.TaggedOutput('odd', result)
        else:
            yield result


class WithTimestampAndWindow(beam.DoFn):
    def process(self, x, timestamp=beam.DoFn.TimestampParam, window=beam.DoFn.WindowParam):
        yield x, int(timestamp.micros // 1_000_000), (int(window.start), int(window.end))


def _timestamped(p):
    """0..N-1, each at timestamp x seconds, in 10-second fixed windows."""
    return (p
            | beam.Create(list(range(N)))
            | 'Timestamp' >> beam.Map(lambda x: TimestampedValue(x, x))
            | beam.WindowInto(FixedWindows(10)))


def _expected(xs):
    """(2x, x's timestamp, x's window) for each x: the output must carry its input's."""
    return [(2 * x, x, (x // 10 * 10, x // 10 * 10 + 10)) for x in xs]


@pytest.fixture(autouse=True)
def _fresh_counter():
    InFlight.reset()
    yield


def test_every_output_is_its_input_doubled_once():
    with TestPipeline() as p:
        out = p | beam.Create(list(range(N))) | beam.ParDo(Double(threads=4, lookahead=8))
        # equal_to compares as multisets: a lost or a duplicated element fails.
        assert_that(out, equal_to([2 * x for x in range(N)]))
    assert InFlight.calls == N


def test_timestamps_and_windows_are_those_of_the_input():
    with TestPipeline() as p:
        out = (_timestamped(p)
               | beam.ParDo(Double(threads=4, lookahead=8))
               | beam.ParDo(WithTimestampAndWindow()))
        assert_that(out, equal_to(_expected(range(N))))


def test_tagged_outputs_are_routed_and_keep_timestamps_and_windows():
    with TestPipeline() as p:
        out = (_timestamped(p)
               | beam.ParDo(DoubleOddsTagged(threads=4, lookahead=8)).with_outputs(
                   'odd', 'zero', main='even'))
        for tag, xs in (('even', range(0, N, 2)), ('odd', range(1, N, 2)), ('zero', [0])):
            assert_that(out[tag] | f'Read{tag}' >> beam.ParDo(WithTimestampAndWindow()),
                        equal_to(_expected(xs)), label=f'Check{tag}')


@pytest.mark.parametrize('threads, lookahead', [
    (4, 3),   # the thread pool could run 4 at once: so could the lookahead
    (8, 2),   # the pool could run 8: the lookahead is what keeps it to 3
    (4, 0),   # no look-ahead: one at a time
])
def test_at_most_lookahead_plus_one_elements_are_in_work(threads, lookahead):
    with TestPipeline() as p:
        out = p | beam.Create(list(range(N))) | beam.ParDo(
            Double(threads=threads, lookahead=lookahead))
        assert_that(out, equal_to([2 * x for x in range(N)]))
    assert InFlight.calls == N
    assert InFlight.peak <= lookahead + 1, InFlight.peak  # the look-ahead bounds the pool
    assert InFlight.peak >= 1


def test_lookahead_overlaps_work_within_a_bundle():
    """Driven by hand as one bundle (the runner may split bundles as it likes): with a
    look-ahead, work overlaps, and outputs still come in input order."""
    fn = Double(threads=4, lookahead=3)
    fn.setup()
    try:
        fn.start_bundle()
        out = []
        for x in range(N):
            out.extend(wv.value for wv in fn.process(x, timestamp=x, window=None))
        out.extend(wv.value for wv in fn.finish_bundle())
    finally:
        fn.teardown()
    assert out == [2 * x for x in range(N)]
    assert 2 <= InFlight.peak <= 4


# --- the byte bound -----------------------------------------------------------------

class Held:
    """Bytes really held right now by finished, not yet emitted results (and the peak)."""
    lock = threading.Lock()
    now = 0
    peak = 0

    @classmethod
    def add(cls, n: int):
        with cls.lock:
            cls.now += n
            cls.peak = max(cls.peak, cls.now)


class BigResults(LookaheadDoFn):
    """work: a size -> a bytes object that large (after a short random wait)."""

    def work(self, size):
        time.sleep(random.random() * 0.01)
        data = bytes(size)
        Held.add(len(data))
        return data

    def outputs(self, data):
        Held.add(-len(data))
        yield len(data)

    def result_bytes(self, data):
        return len(data)


def _run_directly(dofn: LookaheadDoFn, elements):
    dofn.setup()
    dofn.start_bundle()
    out = []
    for e in elements:
        out.extend(w.value for w in dofn.process(e, timestamp=0, window=None))
    out.extend(w.value for w in dofn.finish_bundle())
    dofn.teardown()
    return out


def test_a_byte_budget_bounds_what_huge_results_hold_whatever_the_lookahead():
    mb40 = 40 << 20
    Held.now = Held.peak = 0
    out = _run_directly(BigResults(threads=8, lookahead=64, max_inflight_bytes=100 << 20),
                        [mb40] * 12)
    assert out == [mb40] * 12
    # Without the byte bound, 8 threads and a lookahead of 64 could hold all 12 (480 MB).
    # With it: the budget, plus the one result that crossed it, plus what was running.
    assert Held.peak <= (100 << 20) + 2 * mb40, Held.peak / 2**20


def test_without_a_byte_budget_the_same_results_pile_up_to_the_lookahead():
    mb4 = 4 << 20
    Held.now = Held.peak = 0
    dofn = BigResults(threads=4, lookahead=64)
    dofn.setup()
    dofn.start_bundle()
    for _ in range(12):  # never emitted: the head is waiting, as behind a slow element
        list(dofn.process(mb4, timestamp=0, window=None))
    time.sleep(0.3)
    assert Held.peak > 8 * mb4  # the contrast: nothing stopped them
    list(dofn.finish_bundle())
    dofn.teardown()


def test_the_byte_totals_come_back_to_zero_once_everything_is_emitted():
    # The totals are kept as results land and leave (not summed per element), whatever
    # order the pool threads and the bundle thread get to them.
    dofn = BigResults(threads=4, lookahead=3, max_inflight_bytes=1 << 30)
    dofn.setup()
    for _ in range(3):  # several bundles: the totals start afresh with each
        dofn.start_bundle()
        for size in [1000, 10, 5000, 0, 300] * 40:
            list(dofn.process(size, timestamp=0, window=None))
            assert dofn.inflight_bytes() <= 4 * 5000  # never more than the queue can hold
        list(dofn.finish_bundle())
        assert (dofn._held_bytes, dofn._done_bytes, dofn._running) == (0, 0, 0)
        assert dofn.inflight_bytes() == 0
    dofn.teardown()


def test_the_queue_stays_full_so_the_pool_has_work_while_downstream_runs():
    # Results are emitted only when more than `lookahead` wait: handing a finished one
    # downstream early would leave the pool idle while the model runs on it.
    dofn = Double(threads=2, lookahead=5)
    dofn.setup()
    dofn.start_bundle()
    emitted = [len(list(dofn.process(x, timestamp=0, window=None))) for x in range(20)]
    assert emitted == [0] * 5 + [1] * 15
    assert [w.value for w in dofn.finish_bundle()] == [2 * x for x in range(15, 20)]
    dofn.teardown()
