"""What a live stream session tells its connection: typed events, in the order they happen.

A session sends :class:`Partial` results while an utterance is under way (when their text
changed), one :class:`Final` per utterance, and :class:`Closed` once, after its last final.
Times are stream seconds, to the millisecond (like :class:`~app.asr.ctc.Word`'s). How an event
reaches the client (``/stream``'s JSON, OpenAI Realtime's events) is the routers' business.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from app.asr.ctc import Word


@dataclass(frozen=True)
class Partial:
    """The utterance so far, decoded greedily: its text may still change."""

    text: str
    start: float  # the utterance's first sample, in seconds from the stream's start
    end: float  # the last sample the partial covers


@dataclass(frozen=True)
class Final:
    """An utterance's transcript: one pass over its whole audio, as an offline request gets it."""

    text: str
    start: float
    end: float
    words: tuple[Word, ...] = ()  # empty unless the stream asked for word timestamps


@dataclass(frozen=True)
class Closed:
    """The session ended (after its last final); ``reason`` is why :meth:`finish` was called."""

    reason: str


StreamEvent = Partial | Final | Closed
Emit = Callable[[StreamEvent], Awaitable[None]]
