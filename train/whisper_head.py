"""Whisper tiny.en's encoder with a CTC head (``asr-train-head``): cache, train, export.

The pretrained encoder's stem and its blocks before the first tuned one never change, so they run
once per utterance (``cache``) and their states are stored; training (``train``) then runs only the
tuned blocks, the frozen final layer norm and the CTC head, many epochs for the price of one
encoder pass. ``export`` writes the best checkpoint as a bundle that the server loads like any
other (``app.asr.bundle``): the same :class:`WhisperCTC`, so the WER measured is the WER served.

Every step is resumable: ``cache`` skips the shards already written, ``train --resume`` continues
from ``OUT/last.pt`` until ``--max-hours`` in total. Configuration is data (:class:`HeadConfig`,
saved in every checkpoint with the bundle config, the data summary and the metrics history).

Examples::

    asr-train-head cache --sets synth_train=data/manifests/synth_train.jsonl \\
        dctts=../shared/data/dctts-reader/manifest.jsonl --tuned-layers 3
    asr-train-head train --train synth_train so762_train:3 dctts:3 --dev synth_dev so762_dev \\
        --out runs/en-whisper-tiny --max-hours 1.1
    asr-train-head train --head-only ...                # the 'frozen encoder' step: only the head learns
    asr-train-head export --checkpoint runs/en-whisper-tiny/best.pt --out models/en-whisper-tiny
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from app.asr.bundle import WEIGHTS_FILE, build_model, load_bundle, save_bundle
from app.asr.configs import BundleConfig, whisper_ctc_config
from app.asr.ctc import greedy_decode
from app.asr.whisper.model import WhisperCTC
from train.data.dataset import BucketBatchSampler, parse_manifest_arg
from train.scoring import score
from train.train import State, log_entry
from train.whisper_cache import (
    CACHE_ROOT,
    META_FILE,
    CacheConfig,
    encode_tuned,
    first_tuned,
    run_cache,
)

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------- step 2: train


@dataclass
class HeadConfig:
    """Every setting of a training run (saved inside each checkpoint)."""

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


@dataclass
class CachedSet:
    """One cached set in memory: per-utterance states (frames, d_model) fp16 and target ids."""

    name: str
    states: list[Tensor]
    targets: list[Tensor]
    texts: list[str]
    hours: float


def load_cached(arg: str, root: Path, config: BundleConfig) -> tuple[CachedSet, int]:
    """A cached set named ``name[:repeats]`` (a folder under ``root``, or a path) and its repeats."""
    path, repeats = parse_manifest_arg(arg)
    folder = path if path.is_dir() else root / path
    meta = json.loads((folder / META_FILE).read_text())
    if meta["frozen_blocks"] != first_tuned(config.model) or meta["base_sha256"] != config.model.base.sha256:
        raise SystemExit(f"{folder} holds the states after {meta['frozen_blocks']} blocks of another base or depth")
    cached = CachedSet(folder.name, [], [], [], 0.0)
    for shard_file in sorted(meta["shards"]):
        shard = torch.load(folder / shard_file, weights_only=True)
        cached.states += list(shard["states"].split(shard["lengths"].tolist()))
        cached.targets += list(shard["targets"].split(shard["target_lengths"].tolist()))
        cached.texts += shard["texts"]
        cached.hours += float(shard["seconds"].sum()) / 3600
    logger.info("%s: %d utterances, %.2f h, x%d per epoch", folder, len(cached.states), cached.hours, repeats)
    return cached, repeats


def mask_states(x: Tensor, length: int, cfg: HeadConfig, rng: random.Random) -> None:
    """SpecAugment on one utterance's states (frames, d_model), in place: zeroed time spans and channels."""
    for _ in range(cfg.time_masks):
        width = rng.randint(0, min(cfg.time_mask_frames, length // 10))
        start = rng.randint(0, max(0, length - width))
        x[start : start + width] = 0
    for _ in range(cfg.channel_masks):
        width = rng.randint(0, cfg.channel_mask_width)
        start = rng.randint(0, x.shape[1] - width)
        x[:, start : start + width] = 0


def collate(
    sets: list[CachedSet], index: list[tuple[int, int]], rows: list[int], cfg: HeadConfig, rng: random.Random | None
) -> dict[str, Tensor]:
    """Padded float32 states (batch, frames, d_model), lengths, padded targets and target lengths."""
    items = [index[i] for i in rows]
    states = [sets[s].states[u] for s, u in items]
    targets = [sets[s].targets[u] for s, u in items]
    lengths = torch.tensor([x.shape[0] for x in states])
    batch = torch.zeros(len(states), int(lengths.max()), states[0].shape[1])
    for row, x in enumerate(states):
        batch[row, : x.shape[0]] = x.float()
        if rng is not None:
            mask_states(batch[row], x.shape[0], cfg, rng)
    padded = torch.zeros(len(targets), max(t.numel() for t in targets), dtype=torch.long)
    for row, t in enumerate(targets):
        padded[row, : t.numel()] = t
    return {
        "states": batch,
        "lengths": lengths,
        "targets": padded,
        "target_lengths": torch.tensor([t.numel() for t in targets]),
    }


@torch.no_grad()
def evaluate_dev(model: WhisperCTC, config: BundleConfig, dev: list[CachedSet], cfg: HeadConfig) -> dict[str, float]:
    """Greedy WER per dev set and their mean ('mean')."""
    model.eval()
    result = {}
    for dev_set in dev:
        index = [(0, u) for u in range(len(dev_set.states))]
        frames = [x.shape[0] for x in dev_set.states]
        order = sorted(range(len(index)), key=frames.__getitem__)
        hyps = [""] * len(index)
        for start in range(0, len(order), 32):
            rows = order[start : start + 32]
            batch = collate([dev_set], index, rows, cfg, None)
            log_probs = encode_tuned(model, batch["states"], batch["lengths"])  # (batch, frames, vocab)
            decoded = greedy_decode(log_probs, batch["lengths"], config.tokens, config.blank_id, config.frame_seconds)
            for i, hyp in zip(rows, decoded, strict=True):
                hyps[i] = hyp.text
        result[dev_set.name] = round(score(dev_set.texts, hyps).wer, 4)
    if result:
        result["mean"] = round(sum(result.values()) / len(result), 4)
    model.train()
    return result


def save_checkpoint(
    path: Path,
    model: WhisperCTC,
    optimizer: torch.optim.Optimizer,
    config: BundleConfig,
    cfg: HeadConfig,
    state: State,
    data: dict[str, Any],
) -> None:
    """Write a checkpoint atomically: the trained weights only, and everything needed to resume or export."""
    payload = {
        "model": model.trained_state(),
        "optimizer": optimizer.state_dict(),
        "bundle_config": config.model_dump(),
        "train_config": dataclasses.asdict(cfg),
        "state": dataclasses.asdict(state),
        "data": data,
    }
    torch.save(payload, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`."""
    return torch.load(path, map_location="cpu", weights_only=False)


def lr_scale(step: int, hours: float, cfg: HeadConfig) -> float:
    """Linear warm-up over ``warmup_steps``, then a cosine decay to ``min_lr_ratio`` over the budget."""
    progress = hours / cfg.max_hours
    if cfg.max_steps:
        progress = max(progress, step / cfg.max_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return min(1.0, step / cfg.warmup_steps) * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def build(cfg: HeadConfig, checkpoint: dict[str, Any] | None) -> tuple[BundleConfig, WhisperCTC, torch.optim.Optimizer]:
    """The model (pretrained encoder; head and tuned blocks from a checkpoint or bundle) and its optimizer."""
    config = whisper_ctc_config(cfg.name, cfg.tuned_layers).model_copy(update={"trained": True})
    _, model = build_model(config)
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"], strict=False)
    elif cfg.init_bundle:
        weights = load_bundle(cfg.init_bundle).model.trained_state()
        loaded = model.load_state_dict(weights, strict=False)
        logger.info(
            "from %s: %d tensors (%d of this model's not there)",
            cfg.init_bundle,
            len(weights),
            len(loaded.missing_keys),
        )
    model.dropout.p = cfg.dropout  # training only; the bundle's config keeps the architecture's (eval mode)
    blocks = [p for i in cfg.tuned_layers for p in model.encoder.blocks[i].parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    groups = [{"params": list(model.head.parameters()), "peak": cfg.lr_head}]
    if not cfg.head_only:
        groups.append({"params": blocks, "peak": cfg.lr_blocks})
    for group in groups:
        for p in group["params"]:
            p.requires_grad_(True)
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr_head, weight_decay=cfg.weight_decay)
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
    return config, model.train(), optimizer


def train_step(
    model: WhisperCTC, optimizer: torch.optim.Optimizer, batch: dict[str, Tensor], scale: float, cfg: HeadConfig
) -> tuple[float, float]:
    """One optimiser step at ``scale`` times each group's peak rate; return the CTC loss and the gradient norm."""
    for group in optimizer.param_groups:
        group["lr"] = group["peak"] * scale
    log_probs = encode_tuned(model, batch["states"], batch["lengths"], frozen=cfg.head_only)  # (batch, frames, vocab)
    loss = F.ctc_loss(
        log_probs.transpose(0, 1),
        batch["targets"],
        batch["lengths"],
        batch["target_lengths"],
        blank=0,
        reduction="mean",
        zero_infinity=True,
    )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    optimizer.step()
    return loss.item(), round(float(grad_norm), 3)


def parse_train_args(argv: list[str]) -> HeadConfig:
    """Defaults from :class:`HeadConfig`, then flags; with ``--resume``, the checkpoint's config and the flags given."""
    parser = argparse.ArgumentParser(prog="asr-train-head train", description="train the tuned blocks and the head")
    add_flags(parser, HeadConfig)
    explicit = {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not None}
    cfg = HeadConfig(**explicit)
    last = Path(cfg.out) / "last.pt"
    if cfg.resume and last.exists():
        cfg = HeadConfig(**{**load_checkpoint(last)["train_config"], **explicit, "resume": True})
    return cfg


def load_data(
    cfg: HeadConfig, config: BundleConfig
) -> tuple[list[CachedSet], list[int], list[CachedSet], dict[str, Any]]:
    """The training sets with their repeats, the dev sets (at most ``dev_limit`` utterances each) and a summary."""
    root = Path(cfg.cache_root)
    loaded = [load_cached(arg, root, config) for arg in cfg.train]
    train_sets, repeats = [c for c, _ in loaded], [r for _, r in loaded]
    dev = [load_cached(arg, root, config)[0] for arg in cfg.dev]
    for d in dev:
        keep = sorted(random.Random(cfg.seed).sample(range(len(d.states)), min(cfg.dev_limit, len(d.states))))
        d.states, d.targets, d.texts = ([items[i] for i in keep] for items in (d.states, d.targets, d.texts))
        d.hours = sum(x.shape[0] for x in d.states) / config.frame_rate / 3600
    summary: dict[str, Any] = {"train": {}, "dev": {}}
    for role, sets, counts in (("train", train_sets, repeats), ("dev", dev, [0] * len(dev))):
        for c, r in zip(sets, counts, strict=True):
            summary[role][c.name] = {
                "hours": round(c.hours, 3),
                "utterances": len(c.states),
                **({"repeats": r} if r else {}),
            }
    return train_sets, repeats, dev, summary


def run_train(cfg: HeadConfig) -> State:
    """Train until ``max_hours`` (or ``max_steps``); return the final state."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    checkpoint = load_checkpoint(out / "last.pt") if cfg.resume and (out / "last.pt").exists() else None
    config, model, optimizer = build(cfg, checkpoint)
    train_sets, repeats, dev, data = load_data(cfg, config)
    index = [(s, u) for s, cached in enumerate(train_sets) for u in range(len(cached.states))]
    frames = [train_sets[s].states[u].shape[0] for s, u in index]
    sampler = BucketBatchSampler(frames, [repeats[s] for s, _ in index], cfg.batch_frames, cfg.seed, cfg.max_batch)
    state = State(**checkpoint["state"]) if checkpoint is not None else State()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("%d trainable parameters, %d training utterances, step %d", trainable, len(index), state.step)
    rng = random.Random(cfg.seed + state.step)
    log = (out / "log.jsonl").open("a")
    start = time.time() - state.train_seconds
    last_eval = last_ckpt = time.time()
    losses: list[float] = []

    record = functools.partial(log_entry, log, state)

    def evaluate() -> None:
        wer = evaluate_dev(model, config, dev, cfg)
        state.history.append({"step": state.step, "hours": state.train_seconds / 3600, **wer})
        record("dev", wer=wer)
        if wer and wer["mean"] < state.best_dev:
            state.best_dev = wer["mean"]
            best = config.model_copy(update={"metrics": wer})
            save_checkpoint(out / "best.pt", model, optimizer, best, cfg, state, data)

    done = state.train_seconds >= cfg.max_hours * 3600 or bool(cfg.max_steps and state.step >= cfg.max_steps)
    while not done:
        sampler.epoch, sampler.skip = state.epoch + 1, state.batch_in_epoch  # epoch 0 would be the sorted curriculum
        for rows in sampler:
            scale = lr_scale(state.step + 1, state.train_seconds / 3600, cfg)
            batch = collate(train_sets, index, rows, cfg, rng if cfg.augment else None)
            loss, grad_norm = train_step(model, optimizer, batch, scale, cfg)
            state.step += 1
            state.batch_in_epoch += 1
            state.train_seconds = time.time() - start
            losses.append(loss)
            if state.step % cfg.log_steps == 0:
                mean_loss = round(sum(losses) / len(losses), 4)
                record(
                    "train", loss=mean_loss, lr_head=round(cfg.lr_head * scale, 7), grad_norm=grad_norm, batch=len(rows)
                )
                losses = []
            if dev and time.time() - last_eval >= cfg.eval_minutes * 60:
                evaluate()
                last_eval = time.time()
            if time.time() - last_ckpt >= cfg.checkpoint_minutes * 60:
                save_checkpoint(out / "last.pt", model, optimizer, config, cfg, state, data)
                last_ckpt = time.time()
            if state.train_seconds >= cfg.max_hours * 3600 or (cfg.max_steps and state.step >= cfg.max_steps):
                done = True
                break
        else:
            state.epoch += 1
            state.batch_in_epoch = 0
    if dev:
        evaluate()
    save_checkpoint(out / "last.pt", model, optimizer, config, cfg, state, data)
    record("end", best_dev=state.best_dev)
    log.close()
    return state


# ---------------------------------------------------------------- step 3: export


def run_export(checkpoint_path: Path, out: Path, cache_root: Path, log: Path | None = None) -> Path:
    """Write the bundle of a checkpoint (config with its dev metrics, trained weights, card); return its folder."""
    from train.export import plot_convergence, read_log
    from train.whisper_card import model_card

    checkpoint = load_checkpoint(checkpoint_path)
    saved = BundleConfig.model_validate(checkpoint["bundle_config"])
    cfg = checkpoint["train_config"]
    config = whisper_ctc_config(saved.name, cfg["tuned_layers"]).model_copy(
        update={"trained": True, "metrics": saved.metrics}
    )
    _, model = build_model(config)
    model.load_state_dict(checkpoint["model"], strict=False)
    log = log or checkpoint_path.parent / "log.jsonl"
    has_plot = log.exists()
    out.mkdir(parents=True, exist_ok=True)
    if has_plot:
        plot_convergence(read_log(log), out / "convergence.png")
    metas = {}
    for arg in [*cfg["train"], *cfg["dev"]]:
        path, _ = parse_manifest_arg(arg)
        folder = path if path.is_dir() else cache_root / path
        if (folder / META_FILE).exists():
            metas[folder.name] = json.loads((folder / META_FILE).read_text())
    save_bundle(out, config, model.eval(), model_card(config, model, checkpoint, metas, has_plot))
    megabytes = (out / WEIGHTS_FILE).stat().st_size / 1e6
    if megabytes > 25:
        raise SystemExit(f"{out / WEIGHTS_FILE} is {megabytes:.1f} MB, over the 25 MB a bundle may hold")
    bundle = load_bundle(out)
    logger.info("exported %s (%s, %.1f MB of trained weights) to %s", bundle.name, config.metrics, megabytes, out)
    return out


# ---------------------------------------------------------------- command line


def add_flags(parser: argparse.ArgumentParser, config_class: type) -> None:
    """One ``--flag`` per dataclass field (lists take several values, booleans --x/--no-x); default None."""
    for f in dataclasses.fields(config_class):
        flag = "--" + f.name.replace("_", "-")
        kind = str(f.type)
        if kind == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        elif kind.startswith("list["):
            parser.add_argument(flag, nargs="+", type=int if kind == "list[int]" else str, default=None)
        else:
            parser.add_argument(flag, type={"int": int, "float": float}.get(kind, str), default=None)


def run(argv: list[str] | None = None) -> Any:
    """Run ``asr-train-head {cache,train,export} ...``; return what the step returns."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["cache", "train", "export"])
    args, rest = parser.parse_known_args(argv)
    if args.step == "cache":
        sub = argparse.ArgumentParser(prog="asr-train-head cache", description="cache the frozen encoder's states")
        add_flags(sub, CacheConfig)
        values = {k: v for k, v in vars(sub.parse_args(rest)).items() if v is not None}
        return run_cache(CacheConfig(**values))
    if args.step == "train":
        return run_train(parse_train_args(rest))
    sub = argparse.ArgumentParser(prog="asr-train-head export", description="write the bundle of a checkpoint")
    sub.add_argument("--checkpoint", type=Path, default=Path("runs/en-whisper-tiny/best.pt"))
    sub.add_argument("--out", type=Path, default=Path("models/en-whisper-tiny"))
    sub.add_argument("--cache-root", type=Path, default=CACHE_ROOT, help="for the card's data table")
    sub.add_argument("--log", type=Path, default=None, help="training log.jsonl (default: beside the checkpoint)")
    ex = sub.parse_args(rest)
    return run_export(ex.checkpoint, ex.out, ex.cache_root, ex.log)


def main() -> None:
    """Console entry point of ``asr-train-head``."""
    run()


if __name__ == "__main__":
    main()
