"""The settings of training runs, as data: one dataclass per recipe, read from flags (and JSON, or a checkpoint).

:class:`TrainConfig` is ``asr-train``'s (the convolutional CTC model from scratch or fine-tuned),
:class:`HeadConfig` is ``asr-train-head train``'s (Whisper's encoder with a CTC head). Each is
saved inside every checkpoint, so ``--resume`` continues with the settings a run started with.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from train.checkpoint import load_checkpoint
from train.whisper_cache import CACHE_ROOT


@dataclass
class TrainConfig:
    """Every setting of an ``asr-train`` run (saved inside each checkpoint)."""

    train: list[str] = field(default_factory=list)  # manifests, 'path.jsonl[:repeats]'
    dev: list[str] = field(default_factory=list)  # dev manifests, scored separately; mean WER picks the best
    out: str = "runs/en-small"
    name: str = "en-small"
    init: str | None = None  # bundle folder to fine-tune from
    stride: int = 0  # total time stride; 0 keeps the architecture's (with --init: the bundle's)
    vocab: int = 0  # tokens: 0 keeps the bundle's (characters for a new model); N adds word pieces up to N
    new_head: bool = False  # with --init: a freshly initialised output layer even if the tokens are unchanged
    resume: bool = False
    device: str = "auto"  # auto, cpu, cuda
    threads: int = 2
    workers: int = 1
    seed: int = 1234
    batch_seconds: float = 80.0  # padded audio seconds per batch
    lr: float = 3e-3
    warmup_steps: int = 300
    weight_decay: float = 1e-3
    grad_clip: float = 1.0
    max_hours: float = 1.0  # training wall-clock budget, summed over resumes
    decay_hours: float = 0.0  # the budget's last hours: the learning rate falls linearly to zero
    max_steps: int = 0  # 0: no step limit
    eval_minutes: float = 6.0
    checkpoint_minutes: float = 5.0
    keep_checkpoints: int = 0  # also keep the last N periodic checkpoints in OUT/checkpoints/ (asr-average)
    log_steps: int = 20
    max_utt_seconds: float = 16.0
    stats_utterances: int = 500
    augment: bool = True
    augment_from_epoch: int = 1  # curriculum: the first epoch is clean audio, short utterances first
    augment_strength: float = 1.0  # scales every augmentation probability and SpecAugment width
    dev_limit: int = 400  # at most this many utterances per dev set


@dataclass
class HeadConfig:
    """Every setting of an ``asr-train-head train`` run (saved inside each checkpoint)."""

    train: list[str] = field(default_factory=list)  # cached sets, 'name[:repeats]' under cache_root (or folders)
    dev: list[str] = field(default_factory=list)  # cached dev sets; the mean greedy WER picks best.pt
    cache_root: str = str(CACHE_ROOT)
    out: str = "runs/en-whisper-tiny"
    name: str = "en-whisper-tiny"
    tuned_layers: list[int] = field(default_factory=lambda: [3])
    head_only: bool = False  # freeze the tuned blocks too: only the CTC head learns
    init_bundle: str | None = None  # start from an exported bundle's head and blocks
    resume: bool = False
    threads: int = 2
    seed: int = 1234
    batch_frames: int = 10000  # padded state frames per batch (50 per second: 200 s)
    max_batch: int = 128
    lr_head: float = 1e-3
    lr_blocks: float = 1e-4
    warmup_steps: int = 200
    min_lr_ratio: float = 0.02  # the cosine decay's floor, as a fraction of the peak
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    dropout: float = 0.1  # before the head
    time_masks: int = 2  # per utterance, each up to time_mask_frames wide
    time_mask_frames: int = 10
    channel_masks: int = 2  # per utterance, each up to channel_mask_width of the d_model channels
    channel_mask_width: int = 16
    augment: bool = True
    max_hours: float = 1.0  # wall-clock budget over all resumes; the cosine decay spans it
    max_steps: int = 0  # 0: no step limit (otherwise the decay also ends here)
    eval_minutes: float = 5.0
    checkpoint_minutes: float = 5.0
    log_steps: int = 20
    dev_limit: int = 400


def add_flags(parser: argparse.ArgumentParser, config_class: type) -> None:
    """One ``--flag`` per dataclass field, default None: lists and tuples take several values,
    booleans are --x/--no-x, ``Path`` fields give paths, a field's ``metadata["choices"]`` limits
    its values, and a field without a default is a required flag."""
    for f in dataclasses.fields(config_class):
        flag = "--" + f.name.replace("_", "-")
        kind = str(f.type)
        extra: dict[str, Any] = {"choices": f.metadata["choices"]} if "choices" in f.metadata else {}
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            extra["required"] = True
        if kind == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, **extra)
        elif kind.startswith(("list[", "tuple[")):
            parser.add_argument(
                flag, nargs="+", type=int if kind.startswith(("list[int", "tuple[int")) else str, default=None, **extra
            )
        else:
            kinds: dict[str, type] = {"int": int, "float": float, "Path": Path}
            parser.add_argument(flag, type=kinds.get(kind, str), default=None, **extra)


def given(args: argparse.Namespace, *skip: str) -> dict[str, Any]:
    """The flags given on the command line (those not None), less ``skip``."""
    return {k: v for k, v in vars(args).items() if k not in skip and v is not None}


def resumed(cfg: Any, explicit: dict[str, Any]) -> Any:
    """With ``resume`` and an existing ``OUT/last.pt``: that checkpoint's config, changed only by ``explicit``."""
    last = Path(cfg.out) / "last.pt"
    if not (cfg.resume and last.exists()):
        return cfg
    return type(cfg)(**{**load_checkpoint(last)["train_config"], **explicit, "resume": True})


def parse_train_args(argv: list[str] | None, description: str = "") -> TrainConfig:
    """Defaults from TrainConfig, then an optional JSON ``--config``, then command-line flags.

    With ``--resume`` and an existing ``OUT/last.pt``, the checkpoint's config is the base instead,
    and only the flags given explicitly (e.g. ``--max-hours``) change it.
    """
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="JSON file with TrainConfig fields")
    add_flags(parser, TrainConfig)
    args = parser.parse_args(argv)
    explicit = given(args, "config")
    values: dict[str, Any] = json.loads(args.config.read_text()) if args.config else {}
    return resumed(TrainConfig(**{**values, **explicit}), explicit)


def parse_head_args(argv: list[str]) -> HeadConfig:
    """Defaults from :class:`HeadConfig`, then flags; with ``--resume``, the checkpoint's config and the flags given."""
    parser = argparse.ArgumentParser(prog="asr-train-head train", description="train the tuned blocks and the head")
    add_flags(parser, HeadConfig)
    explicit = given(parser.parse_args(argv))
    return resumed(HeadConfig(**explicit), explicit)
