"""The model runner: model batches on ``model_workers`` threads, the most urgent first; a small
pool decodes their outputs."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import numpy as np

from app.asr.align import SecondPassOutput
from app.asr.recognizer import Recognizer

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Which waiting model batch a free worker takes first. CTC batches (stream partials, greedy and
# beam requests) take milliseconds; a second-pass batch takes tens to hundreds, so a partial
# waiting behind finals would wait for all of them. A second pass also stops between its steps
# to run the CTC batches that wait (``PriorityPool.run_waiting``). Ties go to the oldest batch.
CTC_FIRST = 1
SECOND_PASS = 0


@dataclass(eq=False)
class _Call:
    future: Future[Any]
    fn: Callable[..., Any]
    args: tuple[Any, ...]

    def run(self) -> None:
        if not self.future.set_running_or_notify_cancel():  # cancelled while it waited
            return
        try:
            result = self.fn(*self.args)
        except BaseException as exc:  # handed to the caller, as an executor does
            self.future.set_exception(exc)
        else:
            self.future.set_result(result)


class PriorityPool:
    """``workers`` threads that run the most urgent waiting call first (the oldest among equals).

    A long call may let waiting calls of higher priority run on its own thread between its steps
    (:meth:`run_waiting`). A call whose future was cancelled while it waited is skipped.
    :meth:`shutdown` lets every call submitted before it finish, then stops the threads.
    """

    def __init__(self, workers: int, name: str) -> None:
        self._waiting: list[tuple[float, int, _Call | None]] = []  # a heap: (-priority, order, call)
        self._order = itertools.count()
        self._ready = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}_{index}", daemon=True) for index in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, priority: int, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Queue ``fn(*args)``; higher ``priority`` runs first."""
        future: Future[T] = Future()
        with self._ready:
            if self._closed:
                raise RuntimeError("the model pool is shut down")
            heapq.heappush(self._waiting, (-priority, next(self._order), _Call(future, fn, args)))
            self._ready.notify()
        return future

    def run_waiting(self, above: int) -> None:
        """Run, on the calling thread, the waiting calls of priority above ``above``, most urgent
        first, until none waits."""
        while True:
            with self._ready:
                if not self._waiting or -self._waiting[0][0] <= above:
                    return
                _, _, call = heapq.heappop(self._waiting)
            if call is not None:
                call.run()

    def shutdown(self) -> None:
        """Finish every waiting call, then stop the threads."""
        with self._ready:
            if self._closed:
                return
            self._closed = True
            for _ in self._threads:  # a stop marker per thread, after every call
                heapq.heappush(self._waiting, (math.inf, next(self._order), None))
            self._ready.notify_all()
        for thread in self._threads:
            thread.join()

    def _work(self) -> None:
        while True:
            with self._ready:
                while not self._waiting:
                    self._ready.wait()
                _, _, call = heapq.heappop(self._waiting)
            if call is None:
                return
            call.run()


class ModelRunner:
    """Runs model batches on ``model_workers`` threads and decoding on ``decode_threads`` others,
    so decoding one batch overlaps the network's work on the next, all off the event loop.

    A free model worker takes a waiting CTC batch before a waiting second-pass batch, and a
    running second pass runs the CTC batches that wait between its steps, so stream partials do
    not queue behind finals. With several model workers the recognizer is called from several
    threads at once; it keeps no state between calls (the frontend and network only read their
    weights).
    """

    def __init__(self, recognizer: Recognizer, decode_threads: int = 1, model_workers: int = 1) -> None:
        self.recognizer = recognizer
        self._model = PriorityPool(model_workers, "model")
        self._decode = ThreadPoolExecutor(max_workers=decode_threads, thread_name_prefix="decode")

    async def infer(self, waveforms: Sequence[np.ndarray]) -> list[np.ndarray]:
        """(frames, vocab) log-probs per waveform, computed on a model thread."""
        return await asyncio.wrap_future(self._model.submit(CTC_FIRST, self.recognizer.infer, list(waveforms)))

    async def second_pass(self, waveforms: Sequence[np.ndarray]) -> list[SecondPassOutput]:
        """CTC log-probs and the second pass's text per waveform, computed on a model thread."""
        pause = partial(self._model.run_waiting, SECOND_PASS)
        work = self._model.submit(SECOND_PASS, self.recognizer.second_pass, list(waveforms), pause)
        return await asyncio.wrap_future(work)

    async def decode(self, fn: Callable[..., T], *args: object) -> T:
        """Run a decoding function on the decode pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._decode, fn, *args)

    def warmup(
        self, sample_rate: int, batch_sizes: Sequence[int] = (1, 4), seconds: Sequence[float] = (1.0, 5.0)
    ) -> None:
        """Run a few dummy batches of common shapes (blocking; call from a worker thread)."""
        rng = np.random.default_rng(0)
        for size in batch_sizes:
            for duration in seconds:
                batch = [0.01 * rng.standard_normal(int(duration * sample_rate)).astype(np.float32)] * size
                self._model.submit(CTC_FIRST, self.recognizer.infer, batch).result()

    def warmup_second_pass(self, sample_rate: int, seconds: float = 2.0) -> None:
        """Run the second pass once on a short noise clip (blocking; call from a worker thread)."""
        noise = 0.01 * np.random.default_rng(0).standard_normal(int(seconds * sample_rate)).astype(np.float32)
        self._model.submit(SECOND_PASS, self.recognizer.second_pass, [noise]).result()

    def close(self) -> None:
        self._model.shutdown()
        self._decode.shutdown(wait=True)
