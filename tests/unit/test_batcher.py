"""The dynamic batcher on its own: batching, budgets, priorities, cancellation, failures."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import numpy as np
import pytest

from app.engine.batcher import Batcher, BatchLimits, QueueFull


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.conditions: list[str] = []
        self.fail = fail
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, batch: list[np.ndarray], condition: str = "") -> list[int]:
        await self.release.wait()
        self.batches.append([a.shape[0] for a in batch])
        self.conditions.append(condition)
        if self.fail:
            raise RuntimeError("boom")
        return [a.shape[0] for a in batch]


def audio(n: int) -> np.ndarray:
    return np.zeros(n, np.float32)


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


def test_concurrent_items_form_one_batch_and_results_map_back() -> None:
    async def main() -> None:
        rec = Recorder()
        batcher = Batcher(rec, BatchLimits(max_batch_size=8, max_wait_s=0.05), sample_rate=100)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(audio(10 + i)) for i in range(5)))
        assert results == [10, 11, 12, 13, 14]
        assert len(rec.batches) == 1 and sorted(rec.batches[0]) == results
        await batcher.stop()

    run(main())


def test_items_of_another_condition_never_share_a_batch() -> None:
    async def main() -> None:
        rec = Recorder()
        batcher = Batcher(rec, BatchLimits(max_batch_size=8, max_wait_s=0.05, padded=False), sample_rate=100)
        batcher.start()
        conditions = ["", "Jayme.", "", "Jayme.", "kubelet"]
        results = await asyncio.gather(*(batcher.submit(audio(10 + i), 0, c) for i, c in enumerate(conditions)))
        assert results == [10, 11, 12, 13, 14]
        batches = {c: sorted(b) for b, c in zip(rec.batches, rec.conditions, strict=True)}
        assert batches == {"": [10, 12], "Jayme.": [11, 13], "kubelet": [14]} and len(rec.batches) == 3
        await batcher.stop()

    run(main())


def test_budget_of_padded_samples_splits_batches_by_length() -> None:
    async def main() -> None:
        rec = Recorder()
        limits = BatchLimits(max_batch_size=8, max_wait_s=0.05, max_batch_samples=350)
        batcher = Batcher(rec, limits, sample_rate=100)
        batcher.start()
        sizes = [100, 20, 100, 20, 20, 100]
        await asyncio.gather(*(batcher.submit(audio(n)) for n in sizes))
        for batch in rec.batches:
            assert max(batch) * len(batch) <= 350
        assert sorted(n for b in rec.batches for n in b) == sorted(sizes)
        assert [100, 100, 100] in rec.batches  # similar lengths grouped
        await batcher.stop()

    run(main())


def test_priority_items_lead_the_batch() -> None:
    async def main() -> None:
        rec = Recorder()
        rec.release.clear()
        batcher = Batcher(rec, BatchLimits(max_batch_size=2, max_wait_s=0.0), sample_rate=100)
        batcher.start()
        blocker = batcher.submit(audio(5))
        await asyncio.sleep(0.01)  # the blocker is now running
        offline = [batcher.submit(audio(10)) for _ in range(3)]
        urgent = batcher.submit(audio(50), priority=1)
        rec.release.set()
        await asyncio.gather(blocker, urgent, *offline)
        assert rec.batches[1][0] == 50
        await batcher.stop()

    run(main())


def test_queue_bound_and_cancelled_items_are_skipped() -> None:
    async def main() -> None:
        rec = Recorder()
        rec.release.clear()
        limits = BatchLimits(max_batch_size=4, max_wait_s=0.0, max_queue_samples=100)
        batcher = Batcher(rec, limits, sample_rate=100)
        batcher.start()
        running = batcher.submit(audio(60))
        await asyncio.sleep(0.01)
        queued = batcher.submit(audio(60))
        cancelled = batcher.submit(audio(30))
        with pytest.raises(QueueFull) as full:
            batcher.submit(audio(20))
        assert full.value.retry_after_s >= 1
        cancelled.cancel()
        rec.release.set()
        assert await running == 60 and await queued == 60
        assert all(30 not in batch for batch in rec.batches)
        await batcher.stop()

    run(main())


def test_a_failing_batch_fails_only_its_items() -> None:
    async def main() -> None:
        rec = Recorder(fail=True)
        batcher = Batcher(rec, BatchLimits(max_wait_s=0.01), sample_rate=100)
        batcher.start()
        with pytest.raises(RuntimeError, match="boom"):
            await batcher.submit(audio(10))
        rec.fail = False
        assert await batcher.submit(audio(10)) == 10
        await batcher.stop()

    run(main())


def test_stop_drains_queued_work() -> None:
    async def main() -> None:
        rec = Recorder()
        batcher = Batcher(rec, BatchLimits(max_batch_size=1, max_wait_s=0.0), sample_rate=100)
        batcher.start()
        futures = [batcher.submit(audio(10)) for _ in range(4)]
        await batcher.stop()
        assert all(f.done() and f.result() == 10 for f in futures)

    run(main())


def test_min_fill_keeps_dissimilar_lengths_apart() -> None:
    async def main() -> None:
        rec = Recorder()
        limits = BatchLimits(max_batch_size=8, max_wait_s=0.05, min_fill=0.8)
        batcher = Batcher(rec, limits, sample_rate=100)
        batcher.start()
        await asyncio.gather(*(batcher.submit(audio(n)) for n in (100, 95, 30, 28, 90)))
        for batch in rec.batches:
            assert sum(batch) >= 0.8 * max(batch) * len(batch)
        assert sorted(map(sorted, rec.batches)) == [[28, 30], [90, 95, 100]]
        await batcher.stop()

    run(main())


def test_unpadded_batches_take_the_oldest_items_whatever_their_lengths() -> None:
    async def main() -> None:
        rec = Recorder()
        limits = BatchLimits(max_batch_size=3, max_wait_s=0.05, min_fill=0.8, max_batch_samples=150, padded=False)
        batcher = Batcher(rec, limits, sample_rate=100)
        batcher.start()
        await asyncio.gather(*(batcher.submit(audio(n)) for n in (100, 30, 95, 28, 90)))
        assert rec.batches == [[100, 30, 95], [28, 90]]  # arrival order; fill and padded budget do not apply
        await batcher.stop()

    run(main())


class Overlap:
    """Runs batches that wait to be released, and records how many ran at once."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.release = asyncio.Event()

    async def __call__(self, batch: list[np.ndarray], condition: str = "") -> list[int]:
        self.running += 1
        self.most = max(self.most, self.running)
        await self.release.wait()
        self.running -= 1
        return [a.shape[0] for a in batch]


@pytest.mark.parametrize("in_flight", [1, 2, 3])
def test_in_flight_batches_run_at_once_and_no_more(in_flight: int) -> None:
    async def main() -> None:
        model = Overlap()
        limits = BatchLimits(max_batch_size=1, max_wait_s=0, in_flight=in_flight)
        batcher = Batcher(model, limits, sample_rate=100)
        batcher.start()
        futures = [batcher.submit(audio(10 + i)) for i in range(5)]
        await asyncio.sleep(0.05)
        assert model.most == in_flight  # the rest wait in the queue
        model.release.set()
        assert await asyncio.gather(*futures) == [10, 11, 12, 13, 14]
        await batcher.drain()
        await batcher.stop()

    run(main())
