"""One command, one run: the ceiling, ours with batching on and off, LitServe and a naive server.

On the same workload and machine: the load generator against a trivial endpoint (to show it is
not the bottleneck); then every server is started once on its own loopback port and, for each
round, the offline ceiling is measured and each server in turn is driven in closed loop at
concurrency N (the order reverses every round, so the neighbours' drifting load falls on all
alike); last, an open-loop rate (a fraction of the ceiling) against the servers named by
``--open``. Only one system works at a time: the servers not under test are paused (SIGSTOP),
and after each run the harness waits until the server is idle again before pausing it. Rounds
are pooled per system. It prints and writes the table (JSON under
``bench/results/``, markdown into ``docs/benchmarks.md``) and checks issue 4's acceptance lines:
ours >= 0.75x the ceiling and >= 1.2x LitServe, with a p99 no worse.

    python -m bench.compare                 # about 9 minutes with the defaults
    python -m bench.compare --systems ours --open --decoder attention   # ours and its ceiling on the second pass
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, cast

import httpx

from bench import load, report, servers, workload
from bench.ceiling import DECODERS
from bench.compare_table import acceptance, markdown, rows_for_print
from bench.recognizers import DEFAULT_MODEL

SYSTEMS = ("ours", "ours-batch1", "litserve", "naive", "ours-pcm")
STARTED = time.monotonic()
IDLE_CPU: dict[str, float] = {}  # cores each server uses with no work, measured once started
PCM_UPLOADS: list[load.Payload] = []  # the workload as raw PCM bodies, for "ours-pcm"


def say(message: str) -> None:
    """Progress on stderr, with the seconds since the start."""
    print(f"compare [{time.monotonic() - STARTED:5.0f} s] {message}", file=sys.stderr, flush=True)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--runtime", default="auto", help="ASR_RUNTIME for every system and the ceiling")
    parser.add_argument("--precision", default="auto", help="ASR_PRECISION for every system and the ceiling")
    parser.add_argument("--concurrency", type=int, default=16, help="closed-loop workers")
    parser.add_argument("--decoder", default="greedy", choices=DECODERS, help="what ours and the ceiling decode with")
    parser.add_argument("--rounds", type=int, default=3, help="closed-loop rounds (order reversed each round)")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of load before each timed window")
    parser.add_argument("--duration", type=float, default=20.0, help="closed-loop timed window per round, seconds")
    parser.add_argument("--open-fraction", type=float, default=0.3, help="open-loop audio rate, x the ceiling")
    parser.add_argument("--open-duration", type=float, default=40.0, help="open-loop timed window, seconds")
    parser.add_argument("--open", nargs="*", default=["ours", "litserve"], choices=SYSTEMS, help="open-loop systems")
    parser.add_argument("--systems", nargs="*", default=list(SYSTEMS[:4]), choices=SYSTEMS, help="closed-loop systems")
    parser.add_argument("--ceiling-batch-sizes", nargs="+", default=["1", "16"], help="the best one is the ceiling")
    parser.add_argument("--ceiling-seconds", type=float, default=6.0, help="timed seconds per batch size per round")
    parser.add_argument(
        "--ours-setting", action="append", default=[], metavar="NAME=VALUE", help="an ASR_NAME setting for 'ours'"
    )
    parser.add_argument("--no-docs", action="store_true", help="do not touch docs/benchmarks.md")
    parser.add_argument("--section", default="compare", help="the docs/benchmarks.md section this run replaces")
    parser.add_argument("--title", help="that section's heading (default: the comparison's)")
    args = parser.parse_args(argv)
    if any("=" not in setting for setting in args.ours_setting):
        parser.error("--ours-setting takes NAME=VALUE, e.g. max_batch_size=8")
    return args


def spec_for(name: str, args: argparse.Namespace) -> servers.ServerSpec:
    """How to start a system; ``ours-pcm`` is ours, driven with raw PCM bodies instead of WAV files."""
    if name in ("ours", "ours-pcm"):
        tuned = dict(setting.split("=", 1) for setting in args.ours_setting)
        return servers.ours(name, args.model, args.runtime, args.precision, **{"decoder": args.decoder, **tuned})
    if name == "ours-batch1":
        return servers.ours(name, args.model, args.runtime, args.precision, decoder=args.decoder, max_batch_size="1")
    if name == "litserve":
        return servers.peer(name, "bench.peers.litserve_server", args.model, args.runtime, args.precision, "/health")
    return servers.peer(name, "bench.peers.naive", args.model, args.runtime, args.precision, "/readyz")


def generator_check(items: list[load.Payload], concurrency: int) -> dict[str, object]:
    """The load generator against an endpoint that does no work: the most it can drive here."""
    spec = servers.peer("trivial", "bench.peers.trivial", DEFAULT_MODEL, "auto", "auto", "/readyz")
    with servers.running(spec) as server:
        return load.run_closed(server.url + "/transcribe", items, concurrency, 2.0, 10.0).report()


class CeilingProcess:
    """``bench.ceiling --serve`` in its own process: loaded once, timed once per round."""

    def __init__(self, args: argparse.Namespace) -> None:
        command = [sys.executable, "-m", "bench.ceiling", "--serve", "--model", str(args.model)]
        command += ["--runtime", args.runtime, "--precision", args.precision, "--seconds", str(args.ceiling_seconds)]
        command += ["--batch-sizes", *args.ceiling_batch_sizes, "--decoder", args.decoder]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=servers.ROOT
        )

    def wait_ready(self) -> None:
        """Block until the recognizer and the workload are loaded."""
        self._read()

    def _read(self) -> dict[str, Any]:
        line = self.process.stdout.readline() if self.process.stdout else ""
        if not line:
            raise RuntimeError(f"the ceiling process ended (exit code {self.process.wait()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def measure(self) -> dict[str, Any]:
        """One timing of every batch size (blocks for their seconds)."""
        if self.process.stdin is None:
            raise RuntimeError("the ceiling process has no stdin")
        self.process.stdin.write("measure\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()  # EOF: the process returns
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def batch_counters(url: str) -> dict[str, float]:
    """The batcher's counters from the server's Prometheus metrics (sums and counts since start)."""
    text = httpx.get(url + "/metrics", timeout=10).text
    wanted = ("asr_batch_size_sum", "asr_batch_size_count", "asr_batch_fill_ratio_sum")
    values = dict.fromkeys(wanted, 0.0)
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in values:
            values[name] = float(value)
    return values


def batch_stats(deltas: list[dict[str, float]]) -> dict[str, float]:
    """Batches, mean size and mean fill from counter differences (one per run, summed)."""
    total = {k: sum(d[k] for d in deltas) for k in deltas[0]} if deltas else {}
    count = total.get("asr_batch_size_count", 0.0)
    if count <= 0:
        return {}
    return {
        "batches": count,
        "mean_batch_size": total["asr_batch_size_sum"] / count,
        "mean_batch_fill": total["asr_batch_fill_ratio_sum"] / count,
    }


def drive(
    server: servers.RunningServer, args: argparse.Namespace, items: list[load.Payload], rate: float | None
) -> load.Run:
    """One timed run against ``server`` (closed loop, or open loop at ``rate``).

    The server is thawed for the run and, once idle again (within 0.1 core of its own idle use),
    paused. For our server, the batcher's counters over the run (warm-up included) go into ``run.meta``.
    """
    servers.resume(server)
    url = server.url + "/transcribe"
    if server.spec.name == "ours-pcm":
        items = PCM_UPLOADS or items
    ours = server.spec.name.startswith("ours")
    before = batch_counters(server.url) if ours else {}
    if rate is None:
        run = load.run_closed(url, items, args.concurrency, args.warmup, args.duration)
    else:
        run = load.run_open(url, items, rate, args.warmup / 2, args.open_duration)
    idle = IDLE_CPU.get(server.spec.name, 0.0)
    run.meta["server_cpu_after_drain"] = round(servers.wait_idle(server.process.pid, below=idle + 0.1), 3)
    if ours:
        after = batch_counters(server.url)
        run.meta["batch_deltas"] = {k: after[k] - before[k] for k in after}
    servers.pause(server)
    rate_now = run.report()["audio_seconds_per_second"]
    say(f"{server.spec.name} {run.meta['mode']}: {rate_now:.1f} audio s/s")
    return run


def settle(running: dict[str, servers.RunningServer]) -> dict[str, float]:
    """Measure each server's idle CPU use, then pause them all until their turn."""
    for name, server in running.items():
        IDLE_CPU[name] = servers.idle_cpu(server.process.pid)
        servers.pause(server)
    return dict(IDLE_CPU)


def closed_rounds(
    running: dict[str, servers.RunningServer],
    ceiling: CeilingProcess,
    args: argparse.Namespace,
    items: list[load.Payload],
) -> tuple[list[dict[str, Any]], dict[str, list[load.Run]]]:
    """``args.rounds`` rounds of: the ceiling, then each system (order reversed every round)."""
    ceilings: list[dict[str, Any]] = []
    runs: dict[str, list[load.Run]] = {name: [] for name in running}
    for round_index in range(args.rounds):
        ceilings.append(ceiling.measure())
        say(f"ceiling {ceilings[-1]['audio_seconds_per_second']:.1f} audio s/s")
        order = list(running) if round_index % 2 == 0 else list(reversed(running))
        for name in order:
            runs[name].append(drive(running[name], args, items, None))
    return ceilings, runs


def pooled_ceiling(ceilings: list[dict[str, Any]]) -> dict[str, Any]:
    """The rounds' ceilings together: their mean, with each round's figure kept."""
    rates = [c["audio_seconds_per_second"] for c in ceilings]
    return {
        **ceilings[0],
        "audio_seconds_per_second": sum(rates) / len(rates),
        "rounds": ceilings,
        "round_rates": rates,
    }


def result(name: str, server: servers.RunningServer, runs: list[load.Run]) -> dict[str, Any]:
    """The pooled report of one system's runs, with our batcher's statistics over them."""
    out: dict[str, Any] = {"system": name, **load.pooled_report(runs), "start_seconds": round(server.start_seconds, 1)}
    out.pop("batch_deltas", None)
    deltas = [cast(dict[str, float], run.meta["batch_deltas"]) for run in runs if "batch_deltas" in run.meta]
    if deltas:
        out["server_batches"] = batch_stats(deltas)
    return out


def measure(args: argparse.Namespace, clips: workload.Workload, items: list[load.Payload]) -> dict[str, Any]:
    """Everything timed: generator check, rounds of ceiling and closed loop, then the open loop."""
    run: dict[str, Any] = {"generator": generator_check(items, args.concurrency)}
    say(f"load generator alone: {run['generator']['requests_per_second']:.0f} req/s")
    names = list(dict.fromkeys([*args.systems, *args.open]))
    with ExitStack() as stack:
        ceiling = CeilingProcess(args)  # loads while the servers start
        stack.callback(ceiling.close)
        started = stack.enter_context(servers.running_all([spec_for(name, args) for name in names]))
        running = dict(zip(names, started, strict=True))
        ceiling.wait_ready()
        run["idle_cpu"] = settle(running)
        say("servers ready: " + ", ".join(f"{n} {s.start_seconds:.0f} s" for n, s in running.items()))
        closed = {name: running[name] for name in args.systems}
        ceilings, runs = closed_rounds(closed, ceiling, args, items)
        run["ceiling"] = pooled_ceiling(ceilings)
        run["closed"] = [result(name, running[name], runs[name]) for name in args.systems]
        mean_clip = clips.total_seconds / len(clips.clips)
        run["open_rate_rps"] = rate = args.open_fraction * run["ceiling"]["audio_seconds_per_second"] / mean_clip
        run["open"] = [result(name, running[name], [drive(running[name], args, items, rate)]) for name in args.open]
    return run


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    started = time.monotonic()
    clips = workload.load()
    items = load.payloads(clips)
    if "ours-pcm" in [*args.systems, *args.open]:
        PCM_UPLOADS.extend(load.payloads(clips, "pcm"))
    run: dict[str, Any] = {"benchmark": "compare", "command": report.command_line("bench.compare")}
    run |= {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": report.machine()}
    run |= {"workload": clips.describe(), "options": {k: str(v) for k, v in vars(args).items()}}
    run["ours_settings"] = [f"ASR_{k.upper()}={v}" for k, v in (x.split("=", 1) for x in args.ours_setting)]
    run |= measure(args, clips, items)
    run["acceptance"] = acceptance(run)
    run["machine"]["load_average_end"] = report.machine()["load_average"]
    run["wall_seconds"] = round(time.monotonic() - started, 1)
    path = report.write_json("compare", run)
    print(rows_for_print(run))
    if not args.no_docs:
        report.update_section(args.section, markdown(run, path.relative_to(report.ROOT), args.title))
    say(f"wrote {path} in {run['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
