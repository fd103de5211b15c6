"""Checkpoints of a training run: the progress they restore, writing, reading, keeping and loading one as a bundle.

A checkpoint is one ``torch.save`` dict: ``model`` (the trained weights), ``optimizer``,
``bundle_config`` (the model's whole architecture, frontend and tokens), ``train_config`` (the
run's settings), ``state`` (:class:`State`) and, for some recipes, more (``data``: what it trained on).
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from app.asr.bundle import Bundle, build_model
from app.asr.configs import BundleConfig


@dataclass
class State:
    """Progress that a checkpoint restores."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    train_seconds: float = 0.0
    best_dev: float = float("inf")
    history: list[dict[str, Any]] = field(default_factory=list)

    def advance(self, started: float, now: float) -> None:
        """Count one optimiser step; ``started`` is when training began, less earlier runs' time."""
        self.step += 1
        self.batch_in_epoch += 1
        self.train_seconds = now - started

    def next_epoch(self) -> None:
        self.epoch += 1
        self.batch_in_epoch = 0


def save_checkpoint(
    path: Path,
    weights: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    config: BundleConfig,
    settings: Any,
    state: State,
    **extra: Any,
) -> None:
    """Write a checkpoint atomically (temporary file, then rename); ``settings`` is the run's config dataclass."""
    payload = {
        "model": weights,
        "optimizer": optimizer.state_dict(),
        "bundle_config": config.model_dump(),
        "train_config": dataclasses.asdict(settings),
        "state": dataclasses.asdict(state),
        **extra,
    }
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`."""
    return torch.load(path, map_location="cpu", weights_only=False)


def keep_checkpoint(out: Path, step: int, keep: int) -> None:
    """Copy ``out/last.pt`` to ``out/checkpoints/step-N.pt``; delete all but the ``keep`` latest."""
    if keep <= 0:
        return
    folder = out / "checkpoints"
    folder.mkdir(exist_ok=True)
    shutil.copyfile(out / "last.pt", folder / f"step-{step:07d}.pt")
    for old in sorted(folder.glob("step-*.pt"))[:-keep]:
        old.unlink()


def checkpoint_bundle(path: Path) -> Bundle:
    """A checkpoint's model as an in-memory :class:`Bundle` (eval mode, CPU)."""
    checkpoint = load_checkpoint(path)
    config = BundleConfig.model_validate(checkpoint["bundle_config"])
    frontend, model = build_model(config)
    model.load_state_dict(checkpoint["model"])
    return Bundle(path=path, config=config, frontend=frontend.eval(), model=model.eval())
