"""A one-hour recording POSTed to our server while its memory is sampled.

The file is the workload's speech clips, in a seeded order with short pauses, repeated until
exactly the asked duration, written once as 16 kHz FLAC under ``bench/results/long/``. Our
server (its defaults, unless ``--setting`` says otherwise) is started fresh on a loopback port;
a thread samples its resident memory (RSS, psutil) every 20 ms from before the upload until
after the answer. Reported: peak RSS, its growth over the idle server, the bound that growth
should stay under, and the transcription time.

The bound follows from what the server holds at once: the uploaded bytes and the decoded audio
(float32, 16 kHz), each twice at worst, plus the working set of the batches in flight, which
does not depend on the recording's length. A probe request of two full batches of audio
(``--probe-seconds``, on its own fresh server) measures that working set first; the bound for
the long file is then stated as 2 x upload + 2 x decoded + ``--margin`` x working set.

    python -m bench.long_audio --minutes 60
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import soundfile as sf

from bench import report, servers, workload
from bench.compare import batch_counters, batch_stats
from bench.recognizers import DEFAULT_MODEL
from bench.report import table

LONG_DIR = report.RESULTS / "long"
MB = 1024 * 1024
TIMEOUT_S = 3600.0  # the client waits; the server's own deadline (ASR_REQUEST_TIMEOUT_S) applies
SETTINGS: dict[str, str] = {}  # ASR_* settings over the server's defaults (--setting NAME=VALUE)


def build_file(seconds: float, seed: int = 1234) -> Path:
    """``seconds`` of workload speech with 0.3 s pauses, as FLAC; reused when already there."""
    path = LONG_DIR / f"speech-{seconds:.0f}s-seed{seed}.flac"
    if path.is_file() and sf.info(str(path)).frames == int(seconds * workload.RATE):
        return path
    clips = workload.load()
    rng = np.random.default_rng(seed)
    need = int(seconds * workload.RATE)
    pause = np.zeros(int(0.3 * workload.RATE), np.float32)
    LONG_DIR.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part.flac")
    written = 0
    with sf.SoundFile(partial, "w", workload.RATE, 1, subtype="PCM_16", format="FLAC") as out:
        while written < need:
            clip = clips.clips[int(rng.integers(len(clips.clips)))]
            audio, _ = sf.read(clips.path(clip), dtype="float32")
            piece = np.concatenate([audio, pause])[: need - written]
            out.write(piece)
            written += piece.shape[0]
    partial.rename(path)
    return path


class RssSampler:
    """Samples the resident memory of a process tree in a background thread."""

    def __init__(self, pid: int, interval_s: float = 0.02) -> None:
        self.pid, self.interval_s = pid, interval_s
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def rss(self) -> int:
        total = 0
        for proc in servers.tree(self.pid):
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), self.rss()))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    @property
    def peak(self) -> int:
        return max(rss for _, rss in self.samples)


def transcribe(url: str, path: Path, timeout_s: float) -> tuple[float, dict[str, Any]]:
    """POST the file (multipart); returns the wall seconds and the JSON answer."""
    started = time.perf_counter()
    with path.open("rb") as handle:
        response = httpx.post(url, files={"file": (path.name, handle, "audio/flac")}, timeout=timeout_s)
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"the server answered {response.status_code}: {response.text[:500]}")
    body: dict[str, Any] = response.json()
    return elapsed, body


def one_request(args: argparse.Namespace, seconds: float) -> dict[str, Any]:
    """A fresh server, one upload of ``seconds`` of speech under the RSS sampler."""
    path = build_file(seconds)
    spec = servers.ours("long-audio", args.model, args.runtime, args.precision, **SETTINGS)
    with servers.running(spec) as server:
        servers.wait_idle(server.process.pid)
        counters = batch_counters(server.url)
        with RssSampler(server.process.pid) as sampler:
            time.sleep(0.5)
            baseline = sampler.rss()
            elapsed, body = transcribe(server.url + "/transcribe", path, TIMEOUT_S)
            time.sleep(0.5)
        batches = batch_stats([{k: v - counters[k] for k, v in batch_counters(server.url).items()}])
    upload = path.stat().st_size
    growth = sampler.peak - baseline
    return {
        "file": str(path.relative_to(report.ROOT)),
        "audio_seconds": seconds,
        "upload_mb": upload / MB,
        "decoded_mb": seconds * workload.RATE * 4 / MB,
        "transcription_seconds": elapsed,
        "x_real_time": seconds / elapsed,
        "words": len(body["words"]),
        "rss_baseline_mb": baseline / MB,
        "rss_peak_mb": sampler.peak / MB,
        "rss_growth_mb": growth / MB,
        "samples": len(sampler.samples),
        "server_batches": batches,
    }


def scaled(run: dict[str, Any]) -> float:
    """The part of a request's memory that scales with its length: 2x upload + 2x decoded audio."""
    return float(2 * run["upload_mb"] + 2 * run["decoded_mb"])


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Probe one full batch, state the bound for the long file from it, then run the long file."""
    probe = one_request(args, args.probe_seconds)
    working_set = max(0.0, probe["rss_growth_mb"] - scaled(probe))
    long = one_request(args, args.minutes * 60)
    bound = scaled(long) + args.margin * working_set
    return {
        "benchmark": "long_audio",
        "probe": probe,
        "long": long,
        "working_set_mb": working_set,
        "growth_bound_mb": bound,
        "within_bound": long["rss_growth_mb"] <= bound,
        "margin": args.margin,
        "settings": SETTINGS,
    }


def markdown(result: dict[str, Any], command: str, json_path: Path, machine: dict[str, Any]) -> str:
    """The ``long-audio`` section of docs/benchmarks.md."""
    r, p = result["long"], result["probe"]
    verdict = "stays under the bound" if result["within_bound"] else "**exceeds the bound**"
    settings = ", ".join(f"`ASR_{k.upper()}={v}`" for k, v in result["settings"].items())
    return "\n".join(
        [
            "## Long audio: one hour in one request",
            "",
            f"Command: `make bench-long`, which runs `{command}`. "
            f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Results: `{json_path}`.",
            "",
            f"Machine: {machine['note']} ({machine['cpu']}, {machine['cores']} cores; load average "
            f"{machine['load_average'][0]}). Our server, started fresh for each request, with its defaults"
            + (f" except {settings}" if settings else "")
            + ". Inputs: FLAC files of the workload's speech (16 kHz mono), uploaded as multipart.",
            "",
            table(
                ["figure", f"probe ({p['audio_seconds']:.0f} s)", f"long file ({r['audio_seconds']:.0f} s)"],
                _rows(p, r),
            ),
            "",
            "The bound, stated before the long file runs: what a request holds at once is the uploaded bytes "
            "(twice: the body and the bytes read from it), the decoded audio as float32 at 16 kHz (twice while "
            "decoding: the chunks and their concatenation), and the working set of the batches in flight, which "
            "does not depend on the recording's length. The probe, two full batches of audio "
            f"(`ASR_MAX_BATCH_AUDIO_SECONDS`), measures that working set: {result['working_set_mb']:.0f} MB over "
            f"what scales. Bound for the long file = 2 x {r['upload_mb']:.1f} MB + 2 x {r['decoded_mb']:.0f} MB "
            f"+ {result['margin']:g} x {result['working_set_mb']:.0f} MB = **{result['growth_bound_mb']:.0f} MB** "
            f"of growth over the idle server. Measured: **{r['rss_growth_mb']:.0f} MB** (peak RSS "
            f"{r['rss_peak_mb']:.0f} MB); the growth {verdict}.",
            "",
            "Memory grows with the recording's length (about 230 MB of decoded audio per hour, plus the upload) "
            "and with nothing else: at most one batch per model worker (and one waiting) is handed to the model "
            "at a time, and on a CPU each runs item by item. The hour took "
            f"{r['transcription_seconds']:.1f} s from upload to answer ({r['x_real_time']:.0f}x real time) on this "
            "shared machine.",
        ]
    )


def _rows(p: dict[str, Any], r: dict[str, Any]) -> list[list[str]]:
    return [
        ["upload (FLAC)", f"{p['upload_mb']:.1f} MB", f"{r['upload_mb']:.1f} MB"],
        ["decoded audio (float32)", f"{p['decoded_mb']:.0f} MB", f"{r['decoded_mb']:.0f} MB"],
        ["upload to answer", f"{p['transcription_seconds']:.1f} s", f"{r['transcription_seconds']:.1f} s"],
        ["speed", f"{p['x_real_time']:.0f}x real time", f"{r['x_real_time']:.0f}x real time"],
        ["RSS of the idle server", f"{p['rss_baseline_mb']:.0f} MB", f"{r['rss_baseline_mb']:.0f} MB"],
        ["peak RSS", f"{p['rss_peak_mb']:.0f} MB", f"{r['rss_peak_mb']:.0f} MB"],
        ["growth over idle", f"{p['rss_growth_mb']:.0f} MB", f"{r['rss_growth_mb']:.0f} MB"],
        ["batches / mean size / mean fill", _batches(p["server_batches"]), _batches(r["server_batches"])],
        ["words in the answer", str(p["words"]), str(r["words"])],
    ]


def _batches(b: dict[str, float]) -> str:
    if not b:
        return "—"
    return f"{b['batches']:.0f} / {b['mean_batch_size']:.1f} / {b['mean_batch_fill']:.2f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--runtime", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--minutes", type=float, default=60.0, help="length of the recording")
    parser.add_argument("--probe-seconds", type=float, default=480.0, help="the probe: two full batches of audio")
    parser.add_argument("--margin", type=float, default=2.0, help="x the probe's working set in the bound")
    parser.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE", help="an ASR_NAME setting")
    parser.add_argument("--no-docs", action="store_true", help="do not touch docs/benchmarks.md")
    args = parser.parse_args(argv)
    SETTINGS.update(setting.split("=", 1) for setting in args.setting)
    result = {**measure(args), "machine": report.machine()}
    report.publish("bench.long_audio", "long-audio", result, markdown, docs=not args.no_docs)


if __name__ == "__main__":
    main()
