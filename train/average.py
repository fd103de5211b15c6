"""Average the weights of training checkpoints (``asr-average``).

The checkpoints a run keeps while its learning rate anneals (``asr-train --keep-checkpoints N``)
sit around the same minimum; their mean is often a better model than any one of them. The result
is a checkpoint that ``asr-eval`` and ``asr-export`` read like ``best.pt``.

Example::

    asr-average runs/en-small-s2d/checkpoints/*.pt --last 6 --out runs/en-small-s2d/averaged.pt
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import torch

from train.checkpoint import load_checkpoint

logger = logging.getLogger(__name__)


def average_checkpoints(checkpoints: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean of the checkpoints' model weights and batch-norm statistics, in the latest's frame.

    Integer buffers (batch norm's counters) come from the latest checkpoint; the optimizer state
    is dropped, so the result evaluates and exports but does not resume.
    """
    if not checkpoints:
        raise ValueError("no checkpoints to average")
    latest = max(checkpoints, key=lambda c: c["state"]["step"])
    architecture, tokens = latest["bundle_config"]["model"], latest["bundle_config"].get("tokens")
    for checkpoint in checkpoints:
        if checkpoint["bundle_config"]["model"] != architecture:
            raise ValueError("checkpoints of different architectures cannot be averaged")
        if checkpoint["bundle_config"].get("tokens") != tokens:  # same head size, other word pieces
            raise ValueError("checkpoints with different token lists cannot be averaged")
    weights = {}
    for name, tensor in latest["model"].items():
        if tensor.is_floating_point():
            total = sum(c["model"][name].double() for c in checkpoints)
            weights[name] = (total / len(checkpoints)).to(tensor.dtype)
        else:
            weights[name] = tensor.clone()
    averaged = {key: value for key, value in latest.items() if key != "optimizer"}
    averaged["model"] = weights
    averaged["averaged_steps"] = sorted(c["state"]["step"] for c in checkpoints)
    return averaged


def main(argv: list[str] | None = None) -> None:
    """Write the average of the given checkpoints (with --last N, of the N latest by step)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--last", type=int, default=0, help="average only the N latest checkpoints (0: all)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    checkpoints = sorted((load_checkpoint(p) for p in args.checkpoints), key=lambda c: c["state"]["step"])
    if args.last:
        checkpoints = checkpoints[-args.last :]
    averaged = average_checkpoints(checkpoints)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(averaged, args.out)
    logger.info("averaged steps %s into %s", averaged["averaged_steps"], args.out)


if __name__ == "__main__":
    main()
