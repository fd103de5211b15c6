"""The comparison's table and acceptance checks, from the results of one ``bench.compare`` run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.report import fmt, table
from bench.stats import ratio

LABELS = {
    "ours": "ours, batching on (defaults)",
    "ours-batch1": "ours, batching off (ASR_MAX_BATCH_SIZE=1)",
    "litserve": "LitServe, batching on (16, 5 ms)",
    "naive": "naive FastAPI, one at a time",
    "ours-pcm": "ours, batching on, raw PCM bodies (no container to decode)",
}
HEADER = ["system", "load", "audio s/s", "req/s", "x ceiling", "x LitServe", "p50 s", "p90 s", "p99 s", "ok", "errors"]


def _find(results: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((r for r in results if r["system"] == name), None)


def label(system: str, run: dict[str, Any]) -> str:
    """The table's name of a system; ours with extra settings says which."""
    if system in ("ours", "ours-pcm") and run.get("ours_settings"):
        return LABELS[system] + " (" + ", ".join(run["ours_settings"]) + ")"
    return LABELS.get(system, system)


def _row(result: dict[str, Any], ceiling: float, litserve: dict[str, Any] | None, run: dict[str, Any]) -> list[str]:
    thr = result["audio_seconds_per_second"]
    load = f"closed, {result['concurrency']}" if result["mode"] == "closed" else f"open, {result['rate_rps']:.2f} req/s"
    errors = ", ".join(f"{k}: {v}" for k, v in result["errors"].items()) or "0"
    return [
        label(result["system"], run),
        load,
        fmt(thr, 1),
        fmt(result["requests_per_second"], 2),
        fmt(ratio(thr, ceiling)),
        fmt(ratio(thr, litserve["audio_seconds_per_second"])) if litserve else "—",
        fmt(result["latency_p50"]),
        fmt(result["latency_p90"]),
        fmt(result["latency_p99"]),
        str(result["ok"]),
        errors,
    ]


def rows(run: dict[str, Any]) -> list[list[str]]:
    ceiling = run["ceiling"]["audio_seconds_per_second"]
    litserve = _find(run["closed"], "litserve")
    versus = fmt(ratio(ceiling, litserve["audio_seconds_per_second"])) if litserve else "—"
    out = [["offline ceiling (same recognizer, length-sorted batches)", "—", fmt(ceiling, 1), "—", "1.00", versus]]
    out[0] += ["—"] * (len(HEADER) - len(out[0]))
    for group in ("closed", "open"):
        litserve = _find(run[group], "litserve")
        out += [_row(r, ceiling, litserve, run) for r in run[group]]
    return out


def rows_for_print(run: dict[str, Any]) -> str:
    checks = "\n".join(
        f"{'met' if c['met'] else 'NOT MET'}: {c['check']} = {c['value']:.2f} (target {c['target']})"
        for c in run["acceptance"]
    )
    return table(HEADER, rows(run)) + "\n\n" + checks


def acceptance(run: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 4's CPU lines, for the closed-loop results of this run."""
    ours, litserve = _find(run["closed"], "ours"), _find(run["closed"], "litserve")
    if ours is None:
        return []
    ceiling = run["ceiling"]["audio_seconds_per_second"]
    value = ratio(ours["audio_seconds_per_second"], ceiling)
    checks = [{"check": "ours / ceiling (throughput)", "value": value, "target": ">= 0.75", "met": value >= 0.75}]
    if litserve is not None:
        value = ratio(ours["audio_seconds_per_second"], litserve["audio_seconds_per_second"])
        checks.append(
            {"check": "ours / LitServe (throughput)", "value": value, "target": ">= 1.2", "met": value >= 1.2}
        )
        value = ratio(ours["latency_p99"], litserve["latency_p99"])
        checks.append({"check": "ours p99 / LitServe p99", "value": value, "target": "<= 1.0", "met": value <= 1.0})
    return checks


def markdown(run: dict[str, Any], json_path: Path, title: str | None = None) -> str:
    """A section of docs/benchmarks.md for one comparison run."""
    m, w, c = run["machine"], run["workload"], run["ceiling"]
    rec, opts = c["recognizer"], run["options"]
    lines = [
        f"## {title or 'Serving throughput: ours against the ceiling, LitServe and a naive server'}",
        "",
        f"Command: {_command(run)}. Date: {run['date']}. Results: `{json_path}`.",
        "",
        f"Machine: {m['note']} ({m['cpu']}, {m['cores']} cores; load average {m['load_average'][0]} at the start, "
        f"{m['load_average_end'][0]} at the end). Every system and the ceiling run runtime `{rec['runtime']}`, "
        f"precision `{rec['precision']}`, device `{rec['device']}` ({rec['parameters']:,} parameters).",
        "",
        f"Workload: {w['clips']} clips of {w['source']} speech, {w['min_seconds']}-{w['max_seconds']} s "
        f"(mean {w['mean_seconds']} s, seed {w['seed']}), uploaded as 16 kHz WAV in a seeded order. All servers "
        f"are started once; in each of {opts['rounds']} rounds the ceiling is measured, then each server in turn "
        f"(order reversed every round) gets {float(opts['warmup']):.0f} s of load and a "
        f"{float(opts['duration']):.0f} s timed window, and the harness waits until it is idle again. "
        "A request counts when it completes in a window; rounds are pooled." + _open_line(run),
        "",
        _generator_line(run),
        "",
        table(HEADER, rows(run)),
        "",
        "Throughput per round (audio s/s): "
        + "; ".join(
            f"{r['system']} {', '.join(f'{x:.1f}' for x in r['rounds_audio_seconds_per_second'])}"
            for r in run["closed"]
        )
        + f"; ceiling {', '.join(f'{x:.1f}' for x in c['round_rates'])}.",
        "",
        *_ceiling_lines(c),
        "",
        *_batcher_lines(run),
        "",
        "Acceptance (issue 4, CPU, closed loop, this run):",
        "",
        *[
            f"- {x['check']}: **{x['value']:.2f}** (target {x['target']}): {'met' if x['met'] else '**not met**'}"
            for x in run["acceptance"]
        ],
    ]
    return "\n".join(lines)


def _open_line(run: dict[str, Any]) -> str:
    if not run["open"]:
        return ""
    opts = run["options"]
    return (
        f" The open loop runs once per system at {run['open_rate_rps']:.2f} req/s "
        f"({float(opts['open_fraction']):.2f}x the ceiling's audio rate) for {float(opts['open_duration']):.0f} s; "
        "its latency counts from each request's scheduled arrival."
    )


def _command(run: dict[str, Any]) -> str:
    if run["command"].endswith("-m bench.compare"):
        return f"`make bench`, which runs `{run['command']}`"
    return f"`{run['command']}`"


def _generator_line(run: dict[str, Any]) -> str:
    g = run["generator"]
    fastest = max(r["requests_per_second"] for r in [*run["closed"], *run["open"]])
    busiest = max(r["client_cpu_fraction_of_one_core"] for r in [*run["closed"], *run["open"]])
    return (
        f"Load generator: against an endpoint that reads the upload and does no work it drove "
        f"{g['requests_per_second']:.0f} req/s at concurrency {g['concurrency']}, "
        f"{g['requests_per_second'] / max(fastest, 1e-9):.0f}x the fastest rate below, so it is not the "
        f"bottleneck; during the timed windows it used at most {busiest * 100:.1f}% of one core."
    )


def _ceiling_lines(c: dict[str, Any]) -> list[str]:
    parts = [
        f"{key}: {r['audio_seconds_per_second']:.1f} audio s/s (mean size {r['mean_batch_size']:.1f}, "
        f"fill {r['mean_fill']:.2f})"
        for key, r in c["by_layout_and_batch_size"].items()
    ]
    return [
        "Ceiling (first round), by worker layout (workers x threads each) and largest batch: "
        f"{'; '.join(parts)}. The best counts in every round."
    ]


def _batcher_lines(run: dict[str, Any]) -> list[str]:
    """Our batcher's mean batch size and fill in each of our runs (from the server's metrics)."""
    lines = []
    for group in ("closed", "open"):
        for r in run[group]:
            b = r.get("server_batches")
            if b:
                lines.append(
                    f"- {label(r['system'], run)}, {group} loop: {b['batches']:.0f} batches, "
                    f"mean size {b['mean_batch_size']:.1f}, mean fill {b['mean_batch_fill']:.2f} "
                    "(real over padded audio)"
                )
    return ["Our batcher during these runs (warm-up included):", "", *lines] if lines else []
