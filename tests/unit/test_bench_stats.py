"""The benchmark harness's arithmetic: percentiles, window accounting, batch forming."""

from __future__ import annotations

import math

import numpy as np
import pytest

from app.config import Settings
from app.engine.engine import piece_seconds
from bench.ceiling import fill, length_sorted_batches
from bench.our_systems import engine_pieces
from bench.stats import RequestRecord, percentile, ratio, summarize, summarize_windows


@pytest.mark.parametrize("q", [0, 1, 10, 25, 50, 90, 99, 99.9, 100])
def test_percentile_matches_numpy_linear(q: float) -> None:
    values = list(np.random.default_rng(3).exponential(2.0, size=257))
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_small_cases() -> None:
    assert percentile([5.0], 99) == 5.0
    assert percentile([1.0, 2.0], 50) == 1.5
    assert percentile([3.0, 1.0, 2.0, 4.0], 100) == 4.0  # order of input does not matter
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def record(
    due: float, done: float, seconds: float = 10.0, status: int | None = 200, error: str | None = None
) -> RequestRecord:
    return RequestRecord(due=due, done=done, audio_seconds=seconds, status=status, error=error)


def test_summary_counts_only_completions_inside_the_window() -> None:
    records = [
        record(0.0, 9.0),  # before the window: left out
        record(5.0, 12.0, seconds=4.0),  # sent before, completed inside: counted
        record(11.0, 13.0, seconds=6.0),
        record(14.0, 20.0),  # completes exactly at the end: left out (half-open window)
        record(15.0, 25.0),  # after the window
    ]
    s = summarize(records, 10.0, 20.0)
    assert s.completed == 2 and s.ok == 2
    assert s.audio_seconds == 10.0
    assert s.audio_seconds_per_second == pytest.approx(1.0)
    assert s.requests_per_second == pytest.approx(0.2)
    assert s.latency_p50 == pytest.approx(4.5)  # latencies 7 and 2
    assert s.latency_mean == pytest.approx(4.5)


def test_errors_are_counted_by_outcome_and_excluded_from_throughput() -> None:
    records = [
        record(0.0, 1.0),
        record(0.0, 1.5, status=429),
        record(0.0, 2.0, status=429),
        record(0.0, 2.5, status=None, error="timeout"),
        record(0.0, 3.0, status=None),
    ]
    s = summarize(records, 0.0, 4.0)
    assert s.ok == 1 and s.completed == 5
    assert s.audio_seconds == 10.0
    assert s.errors == {"429": 2, "timeout": 1, "no_response": 1}
    assert s.latency_p99 == pytest.approx(1.0)  # only the successful request


def test_open_loop_latency_counts_from_the_scheduled_arrival() -> None:
    late = record(due=1.0, done=4.0)  # the client was due at 1.0 even if it sent later
    assert late.latency == 3.0


def test_pooled_windows_sum_audio_and_length() -> None:
    first = [record(0.0, 1.0, seconds=30.0)]
    second = [record(100.0, 101.0, seconds=10.0), record(100.0, 102.0, seconds=10.0)]
    s = summarize_windows([(first, 0.0, 10.0), (second, 100.0, 110.0)])
    assert s.window_seconds == 20.0
    assert s.audio_seconds_per_second == pytest.approx(50.0 / 20.0)
    assert s.ok == 3
    with pytest.raises(ValueError):
        summarize_windows([(first, 5.0, 5.0)])


def test_empty_window_has_zero_throughput_and_nan_latency() -> None:
    s = summarize([], 0.0, 1.0)
    assert s.audio_seconds_per_second == 0.0
    assert math.isnan(s.latency_p50)


def test_ratio_guards_zero_and_nan() -> None:
    assert ratio(3.0, 2.0) == 1.5
    assert math.isnan(ratio(1.0, 0.0))
    assert math.isnan(ratio(math.nan, 1.0))


def test_length_sorted_batches_respect_both_limits() -> None:
    lengths = [5, 1, 9, 3, 7, 2, 8]
    batches = length_sorted_batches(lengths, max_batch_size=3, max_batch_samples=20)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= 3
        assert max(lengths[i] for i in batch) * len(batch) <= 20
    longest = [max(lengths[i] for i in b) for b in batches]
    assert longest == sorted(longest)  # shortest first
    assert fill(lengths, [1, 5]) == pytest.approx(3 / 4)


def test_the_second_pass_ceiling_cuts_audio_where_the_engine_does() -> None:
    rate = 16000
    wave = np.random.default_rng(5).normal(0, 0.1, 61 * rate).astype(np.float32)
    longest, _ = piece_seconds(Settings().chunk_seconds, second_pass=True)
    for split in ("auto", "pauses", "length"):  # noise has no pauses: cut by length either way
        cut = engine_pieces(wave, rate, second_pass=True, split=split)
        assert len(cut) == int(np.ceil(61 / longest)) and all(p.shape[0] <= longest * rate for p in cut)
        assert np.array_equal(np.concatenate(cut), wave)
    assert [p.shape[0] for p in engine_pieces(wave[: 10 * rate], rate)] == [10 * rate]
