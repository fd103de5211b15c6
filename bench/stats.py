"""The harness's arithmetic: percentiles, and throughput and latency over a measurement window.

A request counts in a window when it *completes* inside it; throughput is the audio (or the
number of requests) completed in the window divided by the window's length. In a steady state
this neither favours short nor long clips: as many long requests finish inside the window as
were still running when it opened. Latency is measured from the moment a request was due
(open loop: its scheduled arrival, so a slow server cannot hide its queue by slowing the client).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class RequestRecord:
    """One request as the client saw it.

    Attributes:
        due: when the request should have been sent (perf-counter seconds).
        done: when its answer (or failure) arrived.
        audio_seconds: duration of the clip it carried.
        status: the HTTP status, or None when no response came (connection error, timeout).
        error: a short name of the client-side failure, if any.
    """

    due: float
    done: float
    audio_seconds: float
    status: int | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def latency(self) -> float:
        return self.done - self.due


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between closest ranks.

    Matches ``numpy.percentile``'s default method; NaN for an empty sequence.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be within 0-100, got {q}")
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class WindowSummary:
    """Throughput and latency of the requests that completed within one window."""

    window_seconds: float
    completed: int
    ok: int
    audio_seconds: float
    audio_seconds_per_second: float
    requests_per_second: float
    latency_p50: float
    latency_p90: float
    latency_p99: float
    latency_mean: float
    errors: dict[str, int]

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def outcome(record: RequestRecord) -> str:
    """A label for a failed request: its status, or the client-side error name."""
    if record.status is not None:
        return str(record.status)
    return record.error or "no_response"


def summarize(records: Sequence[RequestRecord], start: float, end: float) -> WindowSummary:
    """Summarise the requests that completed in ``[start, end)``.

    Throughput counts only successful requests (status 200); errors are counted by outcome.
    Latency percentiles are over the successful requests, in seconds.
    """
    return summarize_windows([(records, start, end)])


def summarize_windows(parts: Sequence[tuple[Sequence[RequestRecord], float, float]]) -> WindowSummary:
    """Pool several timed windows (e.g. rounds of the same system): throughput is the audio
    completed in all windows over their summed length; latencies are pooled."""
    inside: list[RequestRecord] = []
    length = 0.0
    for records, start, end in parts:
        if end <= start:
            raise ValueError(f"a window must have a positive length, got [{start}, {end})")
        inside += [r for r in records if start <= r.done < end]
        length += end - start
    if not parts:
        raise ValueError("no windows to summarise")
    good = [r for r in inside if r.ok]
    latencies = [r.latency for r in good]
    audio = sum(r.audio_seconds for r in good)
    return WindowSummary(
        window_seconds=length,
        completed=len(inside),
        ok=len(good),
        audio_seconds=audio,
        audio_seconds_per_second=audio / length,
        requests_per_second=len(good) / length,
        latency_p50=percentile(latencies, 50),
        latency_p90=percentile(latencies, 90),
        latency_p99=percentile(latencies, 99),
        latency_mean=sum(latencies) / len(latencies) if latencies else math.nan,
        errors=dict(Counter(outcome(r) for r in inside if not r.ok)),
    )


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, NaN when the denominator is zero or either is NaN."""
    if denominator == 0 or math.isnan(numerator) or math.isnan(denominator):
        return math.nan
    return numerator / denominator
