"""Several LiteRT interpreters over one model, running slices of a batch in parallel.

Why not one interpreter with a thread per core? On a worker whose cores also
decode images, XNNPACK's threads meet at a barrier after every operator: when the
OS hands one of them's core to a decode thread, the other spins until it comes
back. Interpreters with one thread each never wait on each other, so decode fills
the gaps instead of stalling the model. `bench/cores_limit.py` measures both
layouts; on 2 cores with decode running beside them, one single-threaded
interpreter per core is the faster one (README, Performance).

The interpreter handles are not thread-safe; each one is used by one thread at a time
(a free-list), so Beam may call `run` from several threads at once.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import queue
from typing import Any, Callable, Iterator

import numpy as np

from transforms.cpu import this_cpu


def quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    """Values for an input tensor: quantized with its own scale and zero point if integer."""
    dtype = detail['dtype']
    scale, zero = detail['quantization']
    if np.issubdtype(dtype, np.integer) and scale:
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)
    return np.asarray(x, dtype=dtype)


def dequantize(values: np.ndarray, detail: dict) -> np.ndarray:
    """Values of an output tensor (one image's or a batch's) as float32."""
    scale, zero = detail['quantization']
    out = values.astype(np.float32)
    return (out - zero) * scale if scale and np.issubdtype(values.dtype, np.integer) else out


@dataclasses.dataclass(frozen=True)
class Layout:
    """How many interpreters, with how many threads each."""
    interpreters: int
    threads_each: int

    def __str__(self) -> str:
        return f'{self.interpreters} interpreter(s) x {self.threads_each} thread(s)'


def choose_layout(interpreters: int | None, threads: int | None,
                  cores: int | None = None) -> Layout:
    """Fill in what the user left at 0/None from the core count.

    Nothing given: one single-threaded interpreter per core (measured fastest with
    decode sharing the cores). Only threads given: one interpreter with that many
    (what --model_threads always meant; `--model_threads 1` on Dataflow, which runs
    one SDK process per vCPU, stays one thread per process). Only interpreters
    given: the cores shared out among them.
    """
    cores = cores or this_cpu().cores  # the CPU set this process may use, not the host's
    if interpreters and threads:
        return Layout(interpreters, threads)
    if threads:
        return Layout(1, threads)
    if interpreters:
        return Layout(interpreters, max(1, cores // interpreters))
    return Layout(cores, 1)


class InterpreterPool:
    """`layout.interpreters` interpreters of one model; `run` spreads a batch over them."""

    def __init__(self, content: bytes, layout: Layout):
        from ai_edge_litert.interpreter import Interpreter
        self.layout = layout
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        self.interpreters = []
        for _ in range(layout.interpreters):
            interp = Interpreter(model_content=content, num_threads=layout.threads_each)
            interp.allocate_tensors()
            self.interpreters.append(interp)
            self._free.put(interp)
        self._pool = (concurrent.futures.ThreadPoolExecutor(
            layout.interpreters - 1, thread_name_prefix='litert')
            if layout.interpreters > 1 else None)

    @property
    def first(self):
        """An interpreter to read tensor details from (all are alike)."""
        return self.interpreters[0]

    def run(self, n: int, one: Callable[[Any, int], None]) -> None:
        """Call `one(interpreter, i)` for every i in range(n), on all interpreters at once.

        `one` sets the input, invokes and stores the outputs for image i; LiteRT
        releases the GIL while it invokes, so the interpreters really run at once.
        Each takes the next image when it is free (not a fixed slice): when decode
        threads slow one core down, the other interpreter takes more images instead
        of idling at the end of the batch. The calling thread is one of the workers.
        """
        taken = itertools.count()  # next() on a count is atomic under the GIL
        helpers = min(n, len(self.interpreters)) - 1
        futures = [self._pool.submit(self._drain, one, taken, n)
                   for _ in range(helpers)] if self._pool is not None else []
        try:
            self._drain(one, taken, n)
        finally:
            concurrent.futures.wait(futures)  # never return while a helper still writes
        for f in futures:
            f.result()  # re-raises a helper's failure

    def invoke_each(self, n: int, model_input: Callable[[int], np.ndarray], input_detail: dict,
                    outputs: list[dict]) -> list[np.ndarray]:
        """For each image i < n: set model_input(i) and invoke; for each output tensor
        detail, an (n, values) float32 array of its rows, dequantized.

        Per image, an interpreter thread only takes a copy of each output (`get_tensor`)
        into a list slot; the batch is joined and dequantized at the end, one array
        operation per output. Why: every Python step an interpreter thread takes between
        invokes needs the GIL, which the bundle, read and decode threads hold in turn, and
        a numpy operation on more than a few hundred values (a row assignment, a
        dequantization) lets the GIL go and must win it back. In the pipeline, reading two
        outputs one image at a time that way took 0.35 ms of wall time and 0.09 of CPU per
        image (AMD EPYC Zen 3), against 0.02 ms alone.
        """
        index = input_detail['index']
        indices = [detail['index'] for detail in outputs]
        collected: list[list] = [[None] * n for _ in outputs]

        def one(interp, i: int) -> None:
            interp.set_tensor(index, model_input(i))
            interp.invoke()
            for out, got in zip(indices, collected):
                got[i] = interp.get_tensor(out)  # a copy, into a list: no numpy loop
        self.run(n, one)
        return [dequantize(np.concatenate(got).reshape(n, -1), detail) if n else
                np.empty((0, int(np.prod(detail['shape']))), np.float32)
                for detail, got in zip(outputs, collected)]

    def _drain(self, one: Callable[[Any, int], None], taken: Iterator[int], n: int) -> None:
        interp = self._free.get()
        try:
            for i in taken:
                if i >= n:
                    break
                one(interp, i)
        finally:
            self._free.put(interp)
