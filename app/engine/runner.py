"""The model runner: model batches on ``model_workers`` threads, the most urgent first; a small
pool decodes their outputs."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
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
# to run the CTC batches that wait (``PriorityPool.run_waiting``). Ties go to the oldest batch,
# and a batch that has waited MAX_WAIT_S goes next whatever its priority, so a steady stream of
# CTC batches delays second passes but never starves them.
CTC_FIRST = 1
SECOND_PASS = 0
MAX_WAIT_S = 1.0


@dataclass(eq=False)
class _Call:
    future: Future[Any]
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    queued: float = field(default_factory=time.monotonic)
    taken: bool = False  # by a worker; its entries left in the queues are skipped

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
    """``workers`` threads that run the most urgent waiting call first (the oldest among equals),
    or the oldest call once it has waited ``max_wait_s``.

    A long call may let waiting calls of higher priority run on its own thread between its steps
    (:meth:`run_waiting`). A call whose future was cancelled while it waited is skipped.
    :meth:`shutdown` lets every call submitted before it finish, then stops the threads.
    """

    def __init__(self, workers: int, name: str, max_wait_s: float = MAX_WAIT_S) -> None:
        self.max_wait_s = max_wait_s
        self._urgent: list[tuple[int, int, _Call]] = []  # a heap: (-priority, order, call)
        self._oldest: deque[_Call] = deque()  # the same calls in the order they came
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
        call = _Call(future, fn, args)
        with self._ready:
            if self._closed:
                raise RuntimeError("the model pool is shut down")
            heapq.heappush(self._urgent, (-priority, next(self._order), call))
            self._oldest.append(call)
            self._ready.notify()
        return future

    def run_waiting(self, above: int) -> None:
        """Run, on the calling thread, the waiting calls of priority above ``above``, most urgent
        first, until none waits."""
        while True:
            with self._ready:
                self._skip_taken()
                if not self._urgent or -self._urgent[0][0] <= above:
                    return
                call = heapq.heappop(self._urgent)[2]
                call.taken = True
            call.run()

    def shutdown(self) -> None:
        """Finish every waiting call, then stop the threads."""
        with self._ready:
            if self._closed:
                return
            self._closed = True
            self._ready.notify_all()
        for thread in self._threads:
            thread.join()

    def _work(self) -> None:
        while True:
            with self._ready:
                while (call := self._next_waiting()) is None:
                    if self._closed:
                        return
                    self._ready.wait()
                call.taken = True
            call.run()

    def _next_waiting(self) -> _Call | None:
        """The call a free worker runs next (the lock held): the oldest if it has waited
        ``max_wait_s``, else the most urgent."""
        self._skip_taken()
        if not self._oldest:
            return None
        if time.monotonic() - self._oldest[0].queued >= self.max_wait_s:
            return self._oldest[0]
        return self._urgent[0][2]

    def _skip_taken(self) -> None:
        """Drop the entries of calls already taken from the front of both queues."""
        while self._urgent and self._urgent[0][2].taken:
            heapq.heappop(self._urgent)
        while self._oldest and self._oldest[0].taken:
            self._oldest.popleft()


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

    async def second_pass(self, waveforms: Sequence[np.ndarray], prompt: str = "") -> list[SecondPassOutput]:
        """CTC log-probs and the second pass's text per waveform (all read ``prompt`` first),
        computed on a model thread."""
        pause = partial(self._model.run_waiting, SECOND_PASS)
        work = self._model.submit(SECOND_PASS, self.recognizer.second_pass, list(waveforms), pause, prompt)
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
