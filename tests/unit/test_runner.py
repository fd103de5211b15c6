"""The model runner's scheduling: CTC batches before second passes, and a running second pass
lets waiting CTC batches through between its steps."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence

import numpy as np
import pytest

from app.asr.align import SecondPassOutput
from app.engine.runner import ModelRunner, PriorityPool


def test_the_most_urgent_waiting_call_runs_first_then_the_oldest() -> None:
    pool = PriorityPool(1, "test")
    gate, order = threading.Event(), list[str]()
    blocker = pool.submit(0, gate.wait)  # holds the only worker while the others queue
    calls = [pool.submit(priority, order.append, name) for priority, name in [(0, "a"), (1, "b"), (0, "c"), (1, "d")]]
    gate.set()
    blocker.result(timeout=5)
    for call in calls:
        call.result(timeout=5)
    assert order == ["b", "d", "a", "c"]
    pool.shutdown()


def test_a_call_that_waited_too_long_goes_next_whatever_its_priority() -> None:
    pool = PriorityPool(1, "test", max_wait_s=0.05)
    gate, order = threading.Event(), list[str]()
    pool.submit(0, gate.wait)
    old = pool.submit(0, order.append, "old")
    threading.Event().wait(0.1)  # "old" has now waited past max_wait_s
    urgent = [pool.submit(1, order.append, name) for name in ("b", "c")]
    gate.set()
    for call in [old, *urgent]:
        call.result(timeout=5)
    assert order == ["old", "b", "c"]
    pool.shutdown()


def test_cancelled_calls_are_skipped_and_failures_reach_the_caller() -> None:
    pool = PriorityPool(1, "test")
    gate, ran = threading.Event(), list[str]()
    pool.submit(0, gate.wait)
    cancelled = pool.submit(0, ran.append, "cancelled")
    assert cancelled.cancel()
    failing = pool.submit(0, lambda: 1 / 0)
    gate.set()
    with pytest.raises(ZeroDivisionError):
        failing.result(timeout=5)
    assert ran == []
    pool.shutdown()


def test_shutdown_finishes_waiting_calls_and_refuses_new_ones() -> None:
    pool = PriorityPool(2, "test")
    gate, ran = threading.Event(), list[int]()
    pool.submit(0, gate.wait)
    pool.submit(0, gate.wait)
    for index in range(5):
        pool.submit(index % 2, ran.append, index)
    threading.Timer(0.05, gate.set).start()
    pool.shutdown()
    assert sorted(ran) == [0, 1, 2, 3, 4]
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit(1, ran.append, 5)


class SteppingRecognizer:
    """A stand-in whose second pass takes steps until a CTC batch has finished (or gives up)."""

    def __init__(self) -> None:
        self.inferred = threading.Event()
        self.second_pass_started = threading.Event()
        self.steps_after_infer: int | None = None

    def infer(self, waveforms: Sequence[np.ndarray]) -> list[np.ndarray]:
        self.inferred.set()
        return [np.zeros((1, 2), np.float32) for _ in waveforms]

    def second_pass(
        self, waveforms: Sequence[np.ndarray], pause: Callable[[], None], prompt: str = ""
    ) -> list[SecondPassOutput]:
        self.second_pass_started.set()
        for step in range(500):
            if self.inferred.is_set():
                self.steps_after_infer = step
                break
            pause()
            threading.Event().wait(0.01)
        return [SecondPassOutput(np.zeros((1, 2), np.float32), "final") for _ in waveforms]


def test_a_partial_does_not_wait_for_a_running_second_pass() -> None:
    """With one model worker busy on a second pass, a CTC batch runs at the second pass's next
    step on the same worker, so it finishes before the second pass does."""
    recognizer = SteppingRecognizer()
    runner = ModelRunner(recognizer, model_workers=1)  # type: ignore[arg-type]

    async def main() -> None:
        final = asyncio.ensure_future(runner.second_pass([np.zeros(160, np.float32)]))
        while not recognizer.second_pass_started.is_set():
            await asyncio.sleep(0.005)
        partial = await asyncio.wait_for(runner.infer([np.zeros(160, np.float32)]), timeout=5)
        assert partial[0].shape == (1, 2)
        assert not final.done()  # the partial came back while the second pass still ran
        assert (await final)[0].text == "final"

    asyncio.run(main())
    runner.close()
    assert recognizer.steps_after_infer is not None and recognizer.steps_after_infer < 500
