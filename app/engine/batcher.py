"""The dynamic batcher: groups concurrent utterances into model batches.

Items wait in a queue bounded by audio seconds (past it, :class:`QueueFull`). A single
consumer task forms a batch as soon as ``max_batch_size`` items wait or the oldest item has
waited ``max_wait_s``; it starts from the oldest item of the highest priority and adds the
waiting items of highest priority, then closest to it in length, while the padded size stays
within ``max_batch_samples`` and real audio fills at least ``min_fill`` of it (padding is pure
cost on a CPU, where a batch saves little). When the model runs a batch's items one by one
(``padded`` false, the CPU default), lengths do not matter: the oldest items go together.
Each item has its own future; cancelled items are dropped before they cost model time. The
batch runs through ``run_batch`` (which executes off the event loop), up to ``in_flight``
batches at once (one per model worker, plus one waiting for a worker when batches run item by
item); an exception fails only that batch's items. Items carry a ``condition`` (the second pass's
prompt): only items of one condition share a batch, and ``run_batch`` gets it with their audio.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

from app.metrics import Metrics

logger = logging.getLogger(__name__)

R = TypeVar("R")


class QueueFull(Exception):
    """The queue holds as much audio as it may; the caller should retry later."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"the server is at capacity; retry in {retry_after_s:.0f} s")
        self.retry_after_s = retry_after_s


@dataclass(eq=False)
class _Item(Generic[R]):
    audio: np.ndarray
    future: asyncio.Future[R]
    priority: int = 0
    condition: str = ""
    enqueued: float = field(default_factory=time.monotonic)

    @property
    def samples(self) -> int:
        return int(self.audio.shape[0])


@dataclass
class BatchLimits:
    """How batches are formed and how much may wait."""

    max_batch_size: int = 16
    max_wait_s: float = 0.005
    max_batch_samples: int = 240 * 16000
    max_queue_samples: int = 3600 * 16000
    min_fill: float = 0.0  # least real/padded audio a batch may have; items that would lower it wait
    in_flight: int = 1  # batches handed to ``run_batch`` at once (one per model worker, or one more)
    padded: bool = True  # False: the model runs items one by one, so lengths need not match


class Batcher(Generic[R]):
    """Collects items into batches and runs them with ``run_batch``."""

    def __init__(
        self,
        run_batch: Callable[[list[np.ndarray], str], Awaitable[list[R]]],
        limits: BatchLimits,
        sample_rate: int,
        metrics: Metrics | None = None,
    ) -> None:
        self._run_batch = run_batch
        self.limits = limits
        self.sample_rate = sample_rate
        self._metrics = metrics
        self._pending: list[_Item[R]] = []
        self._queued_samples = 0
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._seconds_per_sample_run = 0.0  # running estimate, for Retry-After
        self._reported = (0, 0.0)  # the depth this batcher last added to the shared gauges

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def queued_seconds(self) -> float:
        return self._queued_samples / self.sample_rate

    def start(self) -> None:
        if not self.running:
            self._task = asyncio.create_task(self._consume(), name="batcher")

    async def stop(self) -> None:
        """Finish queued and running work, then stop the consumer."""
        await self.drain()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def drain(self) -> None:
        """Wait until nothing is queued or running."""
        if self.running:
            await self._idle.wait()

    def submit(self, audio: np.ndarray, priority: int = 0, condition: str = "") -> asyncio.Future[R]:
        """Queue one utterance; returns its future. Raises :class:`QueueFull` past the limit.

        Items of higher ``priority`` (live streams' chunks) lead the next batch; items of another
        ``condition`` than its first never join it.
        """
        samples = int(audio.shape[0])
        if self._queued_samples + samples > self.limits.max_queue_samples and self._pending:
            raise QueueFull(self._retry_after())
        item: _Item[R] = _Item(audio, asyncio.get_running_loop().create_future(), priority, condition)
        self._pending.append(item)
        self._queued_samples += samples
        self._idle.clear()
        self._update_depth()
        self._wakeup.set()
        return item.future

    async def _consume(self) -> None:
        slots = asyncio.Semaphore(self.limits.in_flight)
        running: set[asyncio.Task[None]] = set()
        while True:
            await slots.acquire()
            batch = await self._next_batch()
            if not batch:
                slots.release()
                self._set_idle_if_done(running)
                continue
            task = asyncio.create_task(self._execute(batch))
            running.add(task)

            def finished(task: asyncio.Task[None]) -> None:
                running.discard(task)
                slots.release()
                self._set_idle_if_done(running)

            task.add_done_callback(finished)

    def _set_idle_if_done(self, running: set[asyncio.Task[None]]) -> None:
        if not self._pending and not running:
            self._idle.set()

    async def _next_batch(self) -> list[_Item[R]]:
        while not self._pending:
            self._wakeup.clear()
            await self._wakeup.wait()
        deadline = self._pending[0].enqueued + self.limits.max_wait_s
        while len(self._live()) < self.limits.max_batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                break
        return self._select()

    def _live(self) -> list[_Item[R]]:
        """Pending items whose caller still waits; cancelled ones are dropped here."""
        live = [item for item in self._pending if not item.future.done()]
        if len(live) != len(self._pending):
            dropped = [item for item in self._pending if item.future.done()]
            self._queued_samples -= sum(item.samples for item in dropped)
            if self._metrics is not None:
                self._metrics.rejected.labels(reason="cancelled").inc(len(dropped))
            self._pending = live
            self._update_depth()
        return live

    def _select(self) -> list[_Item[R]]:
        live = self._live()
        if not live:
            return []
        top = max(item.priority for item in live)
        first = next(item for item in live if item.priority == top)  # the oldest of the most urgent
        alike = [item for item in live if item is not first and item.condition == first.condition]
        if self.limits.padded:  # the closest lengths pad least
            others = sorted(alike, key=lambda item: (-item.priority, abs(item.samples - first.samples)))
        else:  # lengths cost nothing: the oldest of the most urgent go first
            others = sorted(alike, key=lambda item: -item.priority)
        batch = [first]
        longest, real = first.samples, first.samples
        for item in others:
            if len(batch) >= self.limits.max_batch_size:
                break
            padded = max(longest, item.samples) * (len(batch) + 1)
            too_padded = padded > self.limits.max_batch_samples or (real + item.samples) < self.limits.min_fill * padded
            if self.limits.padded and too_padded:
                continue
            batch.append(item)
            longest, real = max(longest, item.samples), real + item.samples
        chosen = set(map(id, batch))
        self._pending = [item for item in live if id(item) not in chosen]
        self._queued_samples -= sum(item.samples for item in batch)
        self._update_depth()
        return batch

    async def _execute(self, batch: list[_Item[R]]) -> None:
        started = time.monotonic()
        audio_samples = sum(item.samples for item in batch)
        try:
            results = await self._run_batch([item.audio for item in batch], batch[0].condition)
        except Exception as exc:  # one failing batch fails only its own items
            logger.exception("batch of %d items failed", len(batch))
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        elapsed = time.monotonic() - started
        for item, result in zip(batch, results, strict=True):
            if not item.future.done():
                item.future.set_result(result)
        self._seconds_per_sample_run = elapsed / max(1, audio_samples)
        self._observe(batch, started, elapsed, audio_samples)

    def _observe(self, batch: list[_Item[R]], started: float, elapsed: float, audio_samples: int) -> None:
        if self._metrics is None:
            return
        m = self._metrics
        audio_seconds = audio_samples / self.sample_rate
        for item in batch:
            m.queue_wait.observe(started - item.enqueued)
        m.batch_size.observe(len(batch))
        padded_samples = max(item.samples for item in batch) * len(batch) if self.limits.padded else audio_samples
        m.batch_fill.observe(audio_samples / padded_samples)
        m.inference_duration.observe(elapsed)
        m.real_time_factor.observe(elapsed / max(audio_seconds, 1e-9))
        m.audio_processed.inc(audio_seconds)

    def _update_depth(self) -> None:
        """Add this batcher's change of depth to the queue gauges, which sum every batcher's queue
        (the CTC batcher's and the second pass's)."""
        if self._metrics is not None:
            items, audio = len(self._pending), self.queued_seconds
            self._metrics.queue_items.inc(items - self._reported[0])
            self._metrics.queue_audio.inc(audio - self._reported[1])
            self._reported = (items, audio)

    def _retry_after(self) -> float:
        """Seconds until the queue should have room, from the measured processing speed."""
        estimate = self._queued_samples * self._seconds_per_sample_run
        return max(1.0, min(60.0, estimate))
