"""Export a training checkpoint as a model bundle (``asr-export``): weights, config, card and plot.

Example::

    asr-export --checkpoint runs/en-small/best.pt --out models/en-small \\
        --eval runs/en-small/eval.json --log runs/en-small/log.jsonl
    asr-export --checkpoint runs/en-small-s2/best.pt --out models/en-small \\
        --log runs/en-small/log.jsonl runs/en-small-s2/log.jsonl  # a fine-tuned run after its base
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.asr.bundle import Bundle, build_model, load_bundle, save_bundle
from app.asr.configs import BundleConfig

logger = logging.getLogger(__name__)

PLOT_FILE = "convergence.png"


def checkpoint_bundle(path: Path) -> Bundle:
    """A checkpoint's model as an in-memory :class:`Bundle` (eval mode, CPU)."""
    from train.train import load_checkpoint  # heavy imports only when needed

    checkpoint = load_checkpoint(path)
    config = BundleConfig.model_validate(checkpoint["bundle_config"])
    frontend, model = build_model(config)
    model.load_state_dict(checkpoint["model"])
    return Bundle(path=path, config=config, frontend=frontend.eval(), model=model.eval())


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
    import matplotlib

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


def run(argv: list[str] | None = None) -> Path:
    """Run ``asr-export`` with ``argv``; return the bundle folder."""
    from train.card import model_card

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="bundle folder, e.g. models/en-small")
    parser.add_argument("--eval", type=Path, default=None, help="asr-eval JSON for the card's WER table")
    parser.add_argument(
        "--log", type=Path, nargs="+", default=[], help="training log.jsonl for the plot (several: a chain of runs)"
    )
    parser.add_argument("--data-summary", type=Path, default=Path("data/summary.json"))
    parser.add_argument("--notes", type=Path, default=None, help="markdown for the card's 'Limitations' section")
    args = parser.parse_args(argv)

    from train.train import load_checkpoint

    checkpoint = load_checkpoint(args.checkpoint)
    bundle = checkpoint_bundle(args.checkpoint)
    results = json.loads(args.eval.read_text()) if args.eval and args.eval.exists() else None
    metrics = {k: float(v) for k, v in bundle.config.metrics.items()}
    if results:
        for name, entry in results["runtimes"]["fp32"].items():
            metrics[f"wer_{name}"] = float(entry["wer"])
    config = bundle.config.model_copy(update={"trained": True, "metrics": metrics})
    args.out.mkdir(parents=True, exist_ok=True)
    entries, stages = read_stages([log for log in args.log if log.exists()])
    if entries:
        plot_convergence(entries, args.out / PLOT_FILE, list(itertools.accumulate(s.hours for s in stages))[:-1])
    summary = json.loads(args.data_summary.read_text()) if args.data_summary.exists() else {}
    notes = args.notes.read_text().strip() if args.notes and args.notes.exists() else ""
    card = model_card(
        config, bundle.model, checkpoint, results, summary, has_plot=bool(entries), notes=notes, stages=stages
    )
    save_bundle(args.out, config, bundle.model, card)
    loaded = load_bundle(args.out)
    logger.info("exported %s (%d parameters) to %s", loaded.name, loaded.num_parameters(), args.out)
    return args.out


def main() -> None:
    """Console entry point of ``asr-export``."""
    run()


if __name__ == "__main__":
    main()
