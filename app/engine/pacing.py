"""A stream's pace: how fast its audio may arrive, and when a stream that stopped sending is idle.

Each stream keeps an audio clock next to the wall clock, both starting at its first audio message:

- **Too fast.** The audio received may exceed the wall-clock time since the first audio message by
  at most ``burst_s`` plus ``max_speed`` times that time. A message past it is refused
  (:class:`AudioTooFast`), not queued: a client cannot make the server buffer audio faster
  than it can be listened to.
- **Idle.** A stream is idle when its audio falls more than ``idle_timeout_s`` behind the wall
  clock. Only audio counts: a trickle of a few bytes, text messages (the config) and WebSocket
  pings do not keep a stream open. Before its first audio a stream has ``idle_timeout_s`` from
  opening to send it. Audio sent ahead of the wall clock counts at most ``burst_s`` ahead, so a
  fast start does not buy a long silence later.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaceLimits:
    """The server's limits on every stream's pace (``ASR_STREAM_*`` settings)."""

    max_speed: float = 4.0  # fastest audio may arrive, as a multiple of real time
    burst_s: float = 5.0  # audio seconds a stream may send ahead of max_speed
    idle_timeout_s: float = 30.0  # how far a stream's audio may fall behind the wall clock


class AudioTooFast(Exception):
    """A stream's audio arrived faster than its limits allow (the message says the limit)."""

    def __init__(self, limits: PaceLimits) -> None:
        super().__init__(
            f"audio arrived faster than {limits.max_speed:g}x real time "
            f"(after a start of up to {limits.burst_s:g} s of audio); send it at the pace it is recorded"
        )


class StreamPace:
    """The two clocks of one stream; times are ``time.monotonic()`` seconds."""

    def __init__(self, limits: PaceLimits, opened: float) -> None:
        self.limits = limits
        self.first_audio: float | None = None
        self.received_s = 0.0  # audio seconds received
        self.heard_until = opened  # the wall-clock time the audio received covers (for idleness)

    def admit(self, seconds: float, now: float) -> None:
        """Count a message of ``seconds`` of audio arriving at ``now``; raises :class:`AudioTooFast`."""
        limits = self.limits
        if self.first_audio is None:
            self.first_audio = self.heard_until = now
        received = self.received_s + seconds
        if received > limits.burst_s + limits.max_speed * (now - self.first_audio):
            raise AudioTooFast(limits)
        self.received_s = received
        self.heard_until = min(self.heard_until + seconds, now + limits.burst_s)

    @property
    def idle_at(self) -> float:
        """When the stream becomes idle unless more audio arrives first."""
        return self.heard_until + self.limits.idle_timeout_s
