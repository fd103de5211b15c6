"""Train the CTC acoustic model (``asr-train``): one readable loop.

Configuration is data: :class:`TrainConfig` holds every knob, it can be read from a JSON file
(``--config``) and any field overridden on the command line. Checkpoints carry the model's bundle
config, the training config and the metrics history, so ``--resume`` continues exactly where a
run stopped and ``train.export`` needs nothing else.

Examples::

    asr-train --train data/manifests/synth_train.jsonl data/manifests/so762_train.jsonl:3 \\
              --dev data/manifests/synth_dev.jsonl data/manifests/so762_dev.jsonl --out runs/en-small
    asr-train --resume --out runs/en-small                       # continue a stopped run
    asr-train --init models/en-small --train my_domain.jsonl --dev my_dev.jsonl --out runs/my-model \\
              --lr 5e-4 --max-hours 1                           # fine-tune a shipped model
    asr-train --init models/en-small --stride 2 ...             # ... at twice its output frame rate
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import math
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from app.asr.allocator import tune_malloc
from app.asr.bundle import build_model, load_bundle
from app.asr.configs import ENGLISH_CHARS, BundleConfig, default_config
from app.asr.features import LogMelFrontend
from app.asr.model import SepConvCTC
from train.data.augment import AugmentConfig
from train.data.dataset import BucketBatchSampler, SpeechDataset, Utterance, load_utterances, parse_manifest_arg
from train.data.dataset import worker_init as dataset_worker_init
from train.data.wordpieces import learn_word_pieces
from train.scoring import score, transcribe

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Every setting of a training run (saved inside each checkpoint)."""

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


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """Defaults from TrainConfig, then an optional JSON ``--config``, then command-line flags.

    With ``--resume`` and an existing ``OUT/last.pt``, the checkpoint's config is the base instead,
    and only the flags given explicitly (e.g. ``--max-hours``) change it.
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="JSON file with TrainConfig fields")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        elif f.name in ("train", "dev"):
            parser.add_argument(flag, nargs="+", default=None)
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            parser.add_argument(flag, type=kind, default=None)
    args = parser.parse_args(argv)
    explicit = {k: v for k, v in vars(args).items() if k != "config" and v is not None}
    values: dict[str, Any] = json.loads(args.config.read_text()) if args.config else {}
    cfg = TrainConfig(**{**values, **explicit})
    last = Path(cfg.out) / "last.pt"
    if cfg.resume and last.exists():
        saved = load_checkpoint(last)["train_config"]
        cfg = TrainConfig(**{**saved, **explicit, "resume": True})
    return cfg


def lr_at(step: int, cfg: TrainConfig, hours: float = 0.0) -> float:
    """Linear warm-up to ``cfg.lr``, then inverse square-root decay (needs no planned step count).

    In the last ``cfg.decay_hours`` of the ``cfg.max_hours`` budget (``hours`` is the time spent
    so far) the rate is scaled down linearly to zero, the annealing that settles a model into the
    minimum it has been circling.
    """
    step = max(step, 1)
    rate = cfg.lr * min(step / cfg.warmup_steps, math.sqrt(cfg.warmup_steps / step))
    if cfg.decay_hours > 0:
        rate *= min(1.0, max(0.0, (cfg.max_hours - hours) / cfg.decay_hours))
    return rate


def feature_stats(
    config: BundleConfig, utts: list[Utterance], count: int, seed: int
) -> tuple[list[float], list[float]]:
    """Per-mel mean and standard deviation of the log-mel features of ``count`` random utterances."""
    frontend = LogMelFrontend(config.frontend)
    total = torch.zeros(config.frontend.n_mels, dtype=torch.float64)
    squares = torch.zeros_like(total)
    frames = 0
    for utt in random.Random(seed).sample(utts, min(count, len(utts))):
        wave = torch.from_numpy(utt.audio.astype(np.float32) / 32768.0)[None]
        s, q = frontend.stats(wave, torch.tensor([wave.shape[1]]))
        total += s.double()
        squares += q.double()
        frames += int((wave.shape[1] - config.frontend.n_fft) // config.frontend.hop_length + 1)
    mean = total / frames
    std = (squares / frames - mean.square()).clamp_min(1e-6).sqrt()
    return mean.tolist(), std.tolist()


def build_config(cfg: TrainConfig, utts: list[Utterance]) -> tuple[BundleConfig, SepConvCTC]:
    """A fresh model (with feature statistics from the training data) or the one in ``cfg.init``.

    ``cfg.vocab`` > 0 sets the token list: the characters plus word pieces learned from the
    training text (:func:`learn_word_pieces`). A fine-tuned model whose tokens change (or with
    ``cfg.new_head``) keeps every weight but the output layer's, which starts afresh.
    """
    tokens = None
    if cfg.vocab:
        if cfg.vocab < len(ENGLISH_CHARS):
            raise SystemExit(f"--vocab {cfg.vocab}: the {len(ENGLISH_CHARS)} characters are the smallest vocabulary")
        tokens = learn_word_pieces([u.text for u in utts], list(ENGLISH_CHARS), cfg.vocab)
        logger.info("%d tokens, %d of them word pieces", len(tokens), len(tokens) - len(ENGLISH_CHARS))
    if cfg.init:
        bundle = load_bundle(cfg.init)
        config = bundle.config.model_copy(update={"name": cfg.name, "metrics": {}})
        logger.info("fine-tuning from %s (%d parameters)", cfg.init, bundle.num_parameters())
        if cfg.stride and cfg.stride != config.model.stride:
            config = config.with_stride(cfg.stride)
            logger.info("time stride %d, %.0f output frames per second", cfg.stride, config.frame_rate)
        weights = bundle.model.state_dict()
        if (tokens is not None and tokens != config.tokens) or cfg.new_head:
            config = config.with_tokens(tokens or config.tokens)
            weights = {k: v for k, v in weights.items() if not k.startswith("head.")}
            logger.info("new output layer for %d tokens", len(config.tokens))
        _, model = build_model(config)
        model.load_state_dict(weights, strict=False)  # same shapes: at most the strides and the head change
        return config, model
    config = default_config(cfg.name, trained=True)
    if cfg.stride:
        config = config.with_stride(cfg.stride)
    if tokens is not None:
        config = config.with_tokens(tokens)
    mean, std = feature_stats(config, utts, cfg.stats_utterances, cfg.seed)
    frontend = config.frontend.model_copy(update={"normalization": "global", "mean": mean, "std": std})
    config = config.model_copy(update={"frontend": frontend})
    config = BundleConfig.model_validate(config.model_dump())
    _, model = build_model(config)
    return config, model


def load_sets(cfg: TrainConfig) -> tuple[list[Utterance], list[int], dict[str, list[Utterance]]]:
    """Training utterances with their repeat counts, and the dev sets by name."""
    utts: list[Utterance] = []
    repeats: list[int] = []
    for arg in cfg.train:
        path, repeat = parse_manifest_arg(arg)
        loaded = load_utterances(path, cfg.max_utt_seconds, cfg.threads)
        utts += loaded
        repeats += [repeat] * len(loaded)
    if not utts:
        raise SystemExit("no training utterances: pass --train manifest.jsonl")
    dev = {}
    for arg in cfg.dev:
        path, _ = parse_manifest_arg(arg)
        dev[path.stem] = random.Random(cfg.seed).sample(
            loaded := load_utterances(path, 60.0, cfg.threads), min(cfg.dev_limit, len(loaded))
        )
    return utts, repeats, dev


def evaluate_dev(
    model: SepConvCTC, config: BundleConfig, dev: dict[str, list[Utterance]], device: torch.device
) -> dict[str, float]:
    """Greedy WER per dev set and their mean ('mean')."""
    model.eval()
    frontend = LogMelFrontend(config.frontend).to(device)
    result = {}
    for name, utts in dev.items():
        waves = [u.audio.astype(np.float32) / 32768.0 for u in utts]
        hyps = transcribe(model, frontend, config, waves, device)
        result[name] = round(score([u.text for u in utts], hyps).wer, 4)
    if result:
        result["mean"] = round(sum(result.values()) / len(result), 4)
    model.train()
    return result


@dataclass
class State:
    """Progress that a checkpoint restores."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    train_seconds: float = 0.0
    best_dev: float = float("inf")
    history: list[dict[str, Any]] = field(default_factory=list)


def log_entry(log: TextIO, state: State, kind: str, **values: Any) -> None:
    """Append one line to a run's ``log.jsonl`` (kind, step, epoch, hours and ``values``) and log it."""
    entry = {"kind": kind, "step": state.step, "epoch": state.epoch, "hours": round(state.train_seconds / 3600, 4)}
    entry.update(values)
    log.write(json.dumps(entry) + "\n")
    log.flush()
    logger.info("%s", entry)


def save_checkpoint(
    path: Path,
    model: SepConvCTC,
    optimizer: torch.optim.Optimizer,
    config: BundleConfig,
    cfg: TrainConfig,
    state: State,
) -> None:
    """Write a checkpoint atomically (temporary file, then rename)."""
    payload = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "bundle_config": config.model_dump(),
        "train_config": dataclasses.asdict(cfg),
        "state": dataclasses.asdict(state),
    }
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def keep_checkpoint(out: Path, step: int, keep: int) -> None:
    """Copy ``out/last.pt`` to ``out/checkpoints/step-N.pt``; delete all but the ``keep`` latest."""
    if keep <= 0:
        return
    folder = out / "checkpoints"
    folder.mkdir(exist_ok=True)
    shutil.copyfile(out / "last.pt", folder / f"step-{step:07d}.pt")
    for old in sorted(folder.glob("step-*.pt"))[:-keep]:
        old.unlink()


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`."""
    return torch.load(path, map_location="cpu", weights_only=False)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def ctc_step(model: SepConvCTC, batch: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
    """Mean CTC loss of one batch (autocast on CUDA; the loss itself is computed in float32)."""
    feats = batch["features"].to(device, non_blocking=True)
    lengths = batch["lengths"].to(device)
    amp_dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16
    with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=device.type == "cuda"):
        log_probs, out_lengths = model(feats, lengths)  # (batch, frames_out, vocab)
    return F.ctc_loss(
        log_probs.float().transpose(0, 1),
        batch["targets"].to(device),
        out_lengths,
        batch["target_lengths"].to(device),
        blank=0,
        reduction="mean",
        zero_infinity=True,
    )


def run(argv: list[str] | None = None) -> State:
    """Run ``asr-train`` with ``argv``; return the final training state."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = parse_args(argv)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    tune_malloc()  # reuse the feature and activation blocks of one batch for the next
    device = pick_device(cfg.device)
    resume_path = out / "last.pt"
    checkpoint = load_checkpoint(resume_path) if cfg.resume and resume_path.exists() else None
    utts, repeats, dev = load_sets(cfg)
    if checkpoint is not None:
        config = BundleConfig.model_validate(checkpoint["bundle_config"])
        _, model = build_model(config)
        model.load_state_dict(checkpoint["model"])
        state = State(**checkpoint["state"])
        logger.info("resuming from %s at step %d (%.2f h)", resume_path, state.step, state.train_seconds / 3600)
    else:
        config, model = build_config(cfg, utts)
        state = State()
    model.to(device).train()
    logger.info(
        "model: %d parameters, %d training utterances (%.2f h, %.2f h per epoch with repeats)",
        model.num_parameters(),
        len(utts),
        sum(u.seconds for u in utts) / 3600,
        sum(u.seconds * r for u, r in zip(utts, repeats, strict=True)) / 3600,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
    augment = AugmentConfig(enabled=cfg.augment).scaled(cfg.augment_strength)
    dataset = SpeechDataset(utts, config.frontend, config.tokens, augment, seed=cfg.seed)
    sampler = BucketBatchSampler([u.seconds for u in utts], repeats, cfg.batch_seconds, cfg.seed)
    run_loop(cfg, model, optimizer, config, dataset, sampler, dev, state, device)
    return state


def run_loop(
    cfg: TrainConfig,
    model: SepConvCTC,
    optimizer: torch.optim.Optimizer,
    config: BundleConfig,
    dataset: SpeechDataset,
    sampler: BucketBatchSampler,
    dev: dict[str, list[Utterance]],
    state: State,
    device: torch.device,
) -> None:
    """Epochs of CTC training with periodic dev evaluation and checkpoints, until a budget is spent."""
    out = Path(cfg.out)
    log = (out / "log.jsonl").open("a")
    start = time.time() - state.train_seconds
    last_eval = last_ckpt = time.time()
    losses: list[float] = []

    record = functools.partial(log_entry, log, state)

    def evaluate_and_keep_best() -> None:
        wer = evaluate_dev(model, config, dev, device)
        state.history.append({"step": state.step, "hours": state.train_seconds / 3600, **wer})
        record("dev", wer=wer)
        if wer and wer["mean"] < state.best_dev:
            state.best_dev = wer["mean"]
            save_checkpoint(out / "best.pt", model, optimizer, config.model_copy(update={"metrics": wer}), cfg, state)

    done = False
    while not done:
        sampler.epoch, sampler.skip = state.epoch, state.batch_in_epoch
        dataset.augment.enabled = cfg.augment and state.epoch >= cfg.augment_from_epoch
        loader = DataLoader(
            dataset,
            sampler=sampler,
            batch_size=None,
            num_workers=cfg.workers,
            worker_init_fn=dataset_worker_init,
            prefetch_factor=4 if cfg.workers else None,
            persistent_workers=False,
        )
        for batch in loader:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(state.step + 1, cfg, state.train_seconds / 3600)
            loss = ctc_step(model, batch, device)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            state.step += 1
            state.batch_in_epoch += 1
            state.train_seconds = time.time() - start
            losses.append(loss.item())
            if state.step % cfg.log_steps == 0:
                record(
                    "train",
                    loss=round(sum(losses) / len(losses), 4),
                    lr=round(lr_at(state.step, cfg, state.train_seconds / 3600), 6),
                    grad_norm=round(float(grad_norm), 3),
                    batch=len(batch["lengths"]),
                )
                losses = []
            now = time.time()
            if dev and now - last_eval >= cfg.eval_minutes * 60:
                evaluate_and_keep_best()
                last_eval = time.time()
            if now - last_ckpt >= cfg.checkpoint_minutes * 60:
                save_checkpoint(out / "last.pt", model, optimizer, config, cfg, state)
                keep_checkpoint(out, state.step, cfg.keep_checkpoints)
                last_ckpt = time.time()
            over_time = state.train_seconds >= cfg.max_hours * 3600
            if over_time or (cfg.max_steps and state.step >= cfg.max_steps):
                done = True
                break
        else:
            state.epoch += 1
            state.batch_in_epoch = 0
    if dev:
        evaluate_and_keep_best()
    save_checkpoint(out / "last.pt", model, optimizer, config, cfg, state)
    keep_checkpoint(out, state.step, cfg.keep_checkpoints)
    record("end", best_dev=state.best_dev)
    log.close()


def main() -> None:
    """Console entry point of ``asr-train``."""
    run()


if __name__ == "__main__":
    main()
