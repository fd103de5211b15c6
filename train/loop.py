"""What both training loops share: the budget, the wall-clock intervals, and keeping the best dev WER."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from train.checkpoint import State

Record = Callable[..., None]
"""``record(kind, **values)``: one entry of the run's log (:func:`train.runlog.log_entry`)."""


class Budget(Protocol):
    """The settings that end a run: wall-clock hours over all resumes, and optionally steps."""

    max_hours: float
    max_steps: int


def budget_spent(cfg: Budget, state: State) -> bool:
    """Whether the run has trained ``max_hours`` (summed over resumes) or ``max_steps`` (when set)."""
    return state.train_seconds >= cfg.max_hours * 3600 or bool(cfg.max_steps and state.step >= cfg.max_steps)


class Every:
    """A wall-clock interval: :meth:`due` once ``minutes`` have passed since the last :meth:`restart`."""

    def __init__(self, minutes: float) -> None:
        self.seconds = minutes * 60
        self.last = time.time()

    def due(self) -> bool:
        return time.time() - self.last >= self.seconds

    def restart(self) -> None:
        self.last = time.time()


class Losses:
    """The training losses since the last log entry."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def add(self, loss: float) -> None:
        self.values.append(loss)

    def take_mean(self) -> float:
        """Their mean (rounded for the log); the list starts afresh."""
        mean = round(sum(self.values) / len(self.values), 4)
        self.values = []
        return mean


def keep_best(
    wer: dict[str, float], state: State, record: Record, save_best: Callable[[dict[str, float]], Any]
) -> None:
    """Add a dev evaluation to the history and the log; ``save_best(wer)`` when its mean WER is the lowest yet."""
    state.history.append({"step": state.step, "hours": state.train_seconds / 3600, **wer})
    record("dev", wer=wer)
    if wer and wer["mean"] < state.best_dev:
        state.best_dev = wer["mean"]
        save_best(wer)
