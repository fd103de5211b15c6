"""A training run's ``log.jsonl``: writing its entries, reading one or a chain of them, plotting convergence."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from train.checkpoint import State

logger = logging.getLogger(__name__)


def log_entry(log: TextIO, state: State, kind: str, **values: Any) -> None:
    """Append one line to a run's ``log.jsonl`` (kind, step, epoch, hours and ``values``) and log it."""
    entry = {"kind": kind, "step": state.step, "epoch": state.epoch, "hours": round(state.train_seconds / 3600, 4)}
    entry.update(values)
    log.write(json.dumps(entry) + "\n")
    log.flush()
    logger.info("%s", entry)


def read_log(path: Path) -> list[dict[str, Any]]:
    """Entries of a training ``log.jsonl``; a resumed run's repeated steps keep the latest entry."""
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    latest: dict[tuple[str, int], dict[str, Any]] = {}
    for entry in entries:
        latest[(entry["kind"], entry["step"])] = entry
    return sorted(latest.values(), key=lambda e: (e["step"], e["kind"]))


@dataclass(frozen=True)
class Stage:
    """One training run of a chain (a run fine-tuned from the one before): its length in the log."""

    log: Path
    hours: float
    steps: int


def read_stages(paths: list[Path]) -> tuple[list[dict[str, Any]], list[Stage]]:
    """The entries of one or more chained training logs, each later log's hours and steps counted
    on from where the one before ended, so a fine-tuned model's plot shows its whole history."""
    entries: list[dict[str, Any]] = []
    stages: list[Stage] = []
    hours, steps = 0.0, 0
    for path in paths:
        own = read_log(path)
        entries += [{**e, "hours": e["hours"] + hours, "step": e["step"] + steps} for e in own]
        stage = Stage(path, max((e["hours"] for e in own), default=0.0), max((e["step"] for e in own), default=0))
        stages.append(stage)
        hours, steps = hours + stage.hours, steps + stage.steps
    return entries, stages


def plot_convergence(entries: list[dict[str, Any]], path: Path, boundaries: Sequence[float] = ()) -> Path:
    """Dev WER per dev set (and training loss) against training hours, as a PNG; a dotted line
    marks where each later stage of a chain of runs began."""
    import matplotlib  # only exports plot: the training loop does without it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dev = [e for e in entries if e["kind"] == "dev"]
    train = [e for e in entries if e["kind"] == "train"]
    fig, (ax_wer, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    names = sorted({k for e in dev for k in e["wer"]})
    for name in names:
        points = [(e["hours"], 100 * e["wer"][name]) for e in dev if name in e["wer"]]
        ax_wer.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, label=name)
    ax_wer.set(xlabel="training hours (2-core CPU)", ylabel="greedy WER (%)", title="Dev WER", ylim=(0, 100))
    ax_wer.grid(alpha=0.3)
    ax_wer.legend()
    ax_loss.plot([e["hours"] for e in train], [e["loss"] for e in train], linewidth=0.8)
    for hours in boundaries:
        for ax in (ax_wer, ax_loss):
            ax.axvline(hours, color="grey", linestyle=":", linewidth=1)
    ax_loss.set(xlabel="training hours (2-core CPU)", ylabel="CTC loss", title="Training loss", yscale="log")
    ax_loss.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
