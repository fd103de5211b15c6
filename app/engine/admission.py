"""How much decoded upload audio the server holds at once.

An upload's decoded audio (64 KB per second at 16 kHz) stays in memory until its transcript is
done, while only a few of its pieces wait in the batch queue at a time; so the queue's limit alone
does not bound how many long recordings are held. This budget does: an upload whose audio would
pass it is refused with ``QueueFull`` (429, retry later) before any of it is queued.
"""

from __future__ import annotations

from types import TracebackType

from app.engine.batcher import QueueFull

RETRY_AFTER_S = 2.0


class AudioBudget:
    """Seconds of decoded upload audio held by transcriptions in progress, up to ``limit_s``."""

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self.held_s = 0.0

    def take(self, seconds: float) -> Held:
        """Hold ``seconds`` of audio until the returned hold is released; ``QueueFull`` if they do not fit."""
        if self.held_s + seconds > self.limit_s:
            raise QueueFull(RETRY_AFTER_S)
        self.held_s += seconds
        return Held(self, seconds)


class Held:
    """Audio held against a budget; released once (by ``release`` or leaving a ``with`` block)."""

    def __init__(self, budget: AudioBudget, seconds: float) -> None:
        self._budget = budget
        self._seconds = seconds

    def release(self) -> None:
        self._budget.held_s -= self._seconds
        self._seconds = 0.0

    def __enter__(self) -> Held:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()
