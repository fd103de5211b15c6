"""The load generator: POST /transcribe (multipart) to a running server, closed or open loop.

Closed loop: N workers, each sending its next clip as soon as the previous answer arrives.
Open loop: requests arrive at a fixed mean rate (Poisson), whatever the server's pace; a
request's latency counts from its scheduled arrival. Both run for a warm-up then a timed
window, and count the requests completed inside the window (``bench.stats``). When the window
closes no more requests are sent; those in flight may finish (so the server is idle for the next
run) for up to ``drain_s``, then are cancelled: every run ends by itself.

    python -m bench.load --url http://127.0.0.1:8000 --closed 16 --duration 60
    python -m bench.load --url http://127.0.0.1:8000 --rate 2.5 --duration 60
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import soundfile as sf

from bench import report, workload
from bench.http_client import Client, HttpError, client, multipart_body
from bench.stats import RequestRecord, summarize_windows

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
TIMEOUT_S = 300.0  # client deadline per request; servers' own deadlines are shorter


@dataclass(frozen=True)
class Payload:
    """One clip, ready to upload: its request body (built once) and Content-Type."""

    name: str
    body: bytes
    content_type: str
    seconds: float


def payloads(clips: workload.Workload, body: str = "wav") -> list[Payload]:
    """The workload as uploads: ``wav`` (multipart WAV files) or ``pcm`` (raw 16-bit PCM bodies)."""
    if body == "pcm":
        pcm_type = f"audio/pcm;rate={workload.RATE}"
        return [Payload(c.file, _pcm(clips.path(c)), pcm_type, c.seconds) for c in clips.clips]
    uploads = []
    for clip in clips.clips:
        data, content_type = multipart_body("file", clip.file, clips.path(clip).read_bytes(), "audio/wav")
        uploads.append(Payload(clip.file, data, content_type, clip.seconds))
    return uploads


def _pcm(path: Path) -> bytes:
    audio, _ = sf.read(path, dtype="int16")
    return audio.astype("<i2").tobytes()


def clip_sequence(items: list[Payload], seed: int) -> Iterator[Payload]:
    """Endless, reproducible order: a fresh seeded shuffle of all clips per round."""
    rng = np.random.default_rng(seed)
    while True:
        for index in rng.permutation(len(items)):
            yield items[int(index)]


def check_loopback(url: str) -> None:
    host = urlsplit(url).hostname
    if host not in LOOPBACK:
        raise SystemExit(f"bench.load only drives servers on a loopback address, not {host!r}")


async def send(pool: Client, url: str, payload: Payload) -> tuple[int | None, str | None]:
    """POST one clip; (status, None) on a response, (None, error name) on a client-side failure."""
    try:
        response = await pool.post(url, payload.body, payload.content_type)
    except TimeoutError:
        return None, "timeout"
    except (OSError, HttpError, asyncio.IncompleteReadError, ValueError) as exc:
        return None, type(exc).__name__
    if response.status == 200 and b'"text"' not in response.body:
        return None, "bad_body"
    return response.status, None


@dataclass
class Run:
    """What one load run collected."""

    records: list[RequestRecord]
    window: tuple[float, float]
    sent: int
    incomplete: int
    client_cpu_seconds: float
    meta: dict[str, object]

    def report(self) -> dict[str, object]:
        return pooled_report([self])


def pooled_report(runs: list[Run]) -> dict[str, object]:
    """One report over several runs of the same system (their windows pooled)."""
    summary = summarize_windows([(run.records, *run.window) for run in runs]).as_dict()
    length = sum(run.window[1] - run.window[0] for run in runs)
    return {
        **runs[0].meta,
        **summary,
        "sent": sum(run.sent for run in runs),
        "incomplete_at_end": sum(run.incomplete for run in runs),
        "client_cpu_fraction_of_one_core": round(sum(run.client_cpu_seconds for run in runs) / length, 4),
        "rounds_audio_seconds_per_second": [
            round(summarize_windows([(run.records, *run.window)]).audio_seconds_per_second, 2) for run in runs
        ],
    }


async def _finish(tasks: set[asyncio.Task[None]], drain_s: float) -> int:
    """Let in-flight requests finish (so the server is idle afterwards) for up to ``drain_s``,
    then cancel the rest; returns how many were still in flight when the window closed."""
    pending = [t for t in tasks if not t.done()]
    if pending:
        _, late = await asyncio.wait(pending, timeout=drain_s)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
    return len(pending)


async def closed_loop(
    url: str,
    items: list[Payload],
    concurrency: int,
    warmup_s: float,
    duration_s: float,
    timeout_s: float,
    seed: int,
    drain_s: float = 60.0,
) -> Run:
    """``concurrency`` workers back to back for ``warmup_s + duration_s`` seconds."""
    check_loopback(url)
    sequence = clip_sequence(items, seed)
    records: list[RequestRecord] = []
    started = time.perf_counter()
    window = (started + warmup_s, started + warmup_s + duration_s)
    sent = 0

    async def worker(pool: Client) -> None:
        nonlocal sent
        while (due := time.perf_counter()) < window[1]:
            payload = next(sequence)
            sent += 1
            status, error = await send(pool, url, payload)
            records.append(RequestRecord(due, time.perf_counter(), payload.seconds, status, error))

    async with client(url, concurrency, timeout_s) as pool:
        tasks = {asyncio.create_task(worker(pool)) for _ in range(concurrency)}
        cpu = await _cpu_over(window)
        incomplete = await _finish(tasks, drain_s)
    meta = {"mode": "closed", "concurrency": concurrency, "warmup_s": warmup_s}
    return Run(records, window, sent, incomplete, cpu, meta)


async def open_loop(
    url: str,
    items: list[Payload],
    rate: float,
    warmup_s: float,
    duration_s: float,
    timeout_s: float,
    seed: int,
    max_outstanding: int = 256,
    drain_s: float = 60.0,
) -> Run:
    """Poisson arrivals at ``rate`` requests/s; beyond ``max_outstanding`` open requests the client sheds."""
    check_loopback(url)
    sequence = clip_sequence(items, seed)
    rng = np.random.default_rng(seed + 1)
    records: list[RequestRecord] = []
    started = time.perf_counter()
    window = (started + warmup_s, started + warmup_s + duration_s)
    tasks: set[asyncio.Task[None]] = set()
    sent = 0

    async def one(pool: Client, due: float, payload: Payload) -> None:
        status, error = await send(pool, url, payload)
        records.append(RequestRecord(due, time.perf_counter(), payload.seconds, status, error))

    async with client(url, max_outstanding, timeout_s) as pool:
        cpu_task = asyncio.create_task(_cpu_over(window))
        due = started
        while (due := due + float(rng.exponential(1 / rate))) < window[1]:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            payload = next(sequence)
            if sum(not t.done() for t in tasks) >= max_outstanding:
                records.append(RequestRecord(due, due, payload.seconds, None, "client_shed"))
                continue
            sent += 1
            task = asyncio.create_task(one(pool, due, payload))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        cpu = await cpu_task
        incomplete = await _finish(tasks, drain_s)
    meta = {"mode": "open", "rate_rps": rate, "warmup_s": warmup_s}
    return Run(records, window, sent, incomplete, cpu, meta)


async def _cpu_over(window: tuple[float, float]) -> float:
    """This process's CPU seconds spent between the window's bounds (sleeps until its end)."""
    await asyncio.sleep(max(0.0, window[0] - time.perf_counter()))
    before = time.process_time()
    await asyncio.sleep(max(0.0, window[1] - time.perf_counter()))
    return time.process_time() - before


def run_closed(
    url: str, items: list[Payload], concurrency: int, warmup_s: float, duration_s: float, seed: int = 7
) -> Run:
    """A closed-loop run (blocking)."""
    return asyncio.run(closed_loop(url, items, concurrency, warmup_s, duration_s, TIMEOUT_S, seed))


def run_open(url: str, items: list[Payload], rate: float, warmup_s: float, duration_s: float, seed: int = 7) -> Run:
    """An open-loop run (blocking)."""
    return asyncio.run(open_loop(url, items, rate, warmup_s, duration_s, TIMEOUT_S, seed))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL (loopback only)")
    parser.add_argument("--path", default="/transcribe")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--closed", type=int, metavar="N", help="closed loop with N concurrent workers")
    mode.add_argument("--rate", type=float, metavar="RPS", help="open loop at RPS mean arrivals per second")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before the timed window")
    parser.add_argument("--duration", type=float, default=60.0, help="length of the timed window in seconds")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S, help="client timeout per request in seconds")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--body", choices=["wav", "pcm"], default="wav", help="multipart WAV, or raw PCM bodies")
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args(argv)
    url = args.url.rstrip("/") + args.path
    check_loopback(url)
    items = payloads(workload.load(), args.body)
    if args.closed is not None:
        run = asyncio.run(closed_loop(url, items, args.closed, args.warmup, args.duration, args.timeout, args.seed))
    else:
        run = asyncio.run(open_loop(url, items, args.rate, args.warmup, args.duration, args.timeout, args.seed))
    report.print_json(run.report(), args.json)


if __name__ == "__main__":
    main()
