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
from pathlib import Path

from app.asr.bundle import load_bundle, save_bundle
from train.card import model_card
from train.checkpoint import checkpoint_bundle, load_checkpoint
from train.runlog import plot_convergence, read_stages

logger = logging.getLogger(__name__)

PLOT_FILE = "convergence.png"


def run(argv: list[str] | None = None) -> Path:
    """Run ``asr-export`` with ``argv``; return the bundle folder."""
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
