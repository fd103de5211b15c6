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
import json
import logging
import math
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from app.asr.bundle import WEIGHTS_FILE, build_model, load_bundle, save_bundle
from app.asr.configs import BundleConfig, WhisperCTCConfig, whisper_ctc_config
from app.asr.ctc import greedy_decode, text_to_ids
from app.asr.features import WhisperLogMel
from app.asr.text import normalize_text
from app.asr.whisper.model import WhisperCTC
from train.data.audio_io import SAMPLE_RATE, read_audio, read_manifest
from train.data.dataset import BucketBatchSampler, parse_manifest_arg
from train.scoring import score

logger = logging.getLogger(__name__)

CACHE_ROOT = Path("data/cache/whisper-tiny-en")
META_FILE = "meta.json"
MAX_SECONDS = 30.0  # the encoder's positions cover 30 s


# ---------------------------------------------------------------- the encoder in two halves


def first_tuned(config: WhisperCTCConfig) -> int:
    """Index of the first encoder block trained here: the cache holds the states before it."""
    return min(config.tuned_layers, default=config.encoder_layers)


def key_mask(lengths: Tensor, frames: int) -> Tensor | None:
    """(batch, 1, 1, frames) True on valid keys, or None when no row is padded."""
    if int(lengths.min()) == frames:
        return None
    return (torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None])[:, None, None, :]


@torch.no_grad()
def encode_frozen(model: WhisperCTC, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """The frozen first half of ``WhisperEncoder.forward``: stem and the blocks before the first tuned one.

    Args:
        features: (batch, n_mels, frames) Whisper log-mels, zero past each length.
        lengths: (batch,) valid feature frames.

    Returns:
        states (batch, frames_out, d_model) and (batch,) output lengths; rows are exactly what
        each utterance gives alone (padding is masked as the encoder masks it).
    """
    encoder = model.encoder
    x, out_lengths, _ = encoder.stem(features, lengths)
    mask = key_mask(out_lengths, x.shape[1])
    for block in encoder.blocks[: first_tuned(model.config)]:
        x = block(x, mask)
    return x, out_lengths


def encode_tuned(model: WhisperCTC, states: Tensor, lengths: Tensor, frozen: bool = False) -> Tensor:
    """The second half: the remaining blocks, ``ln_post`` and the CTC head.

    ``states`` (batch, frames, d_model) from :func:`encode_frozen` -> log-probs (batch, frames, vocab).
    ``frozen`` runs the blocks without gradients (the head-only step).
    """
    mask = key_mask(lengths, states.shape[1])
    with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
        for block in model.encoder.blocks[first_tuned(model.config) :]:
            states = block(states, mask)
        states = model.encoder.ln_post(states)
    return model.ctc(states)


def waves_to_batch(waves: list[np.ndarray]) -> tuple[Tensor, Tensor]:
    """Zero-padded (batch, samples) float32 audio and (batch,) lengths."""
    lengths = torch.tensor([w.size for w in waves])
    batch = torch.zeros(len(waves), int(lengths.max()))
    for row, wave in enumerate(waves):
        batch[row, : wave.size] = torch.from_numpy(wave)
    return batch, lengths


# ---------------------------------------------------------------- step 1: cache


@dataclass
class CacheConfig:
    """Settings of ``asr-train-head cache``."""

    sets: list[str] = field(default_factory=list)  # 'name=manifest.jsonl' or a manifest (named by its stem)
    root: str = str(CACHE_ROOT)
    tuned_layers: list[int] = field(default_factory=lambda: [3])
    shard_utts: int = 256
    batch_seconds: float = 120.0  # padded audio per encoder batch
    limit: int = 0  # only the first N rows of each manifest (0: all)
    threads: int = 2


def cache_meta(config: BundleConfig, manifest: Path, cfg: CacheConfig) -> dict[str, Any]:
    """What a cache folder's states depend on; a folder written with other values is refused."""
    return {
        "manifest": str(manifest),
        "base_sha256": config.model.base.sha256,
        "frozen_blocks": first_tuned(config.model),
        "shard_utts": cfg.shard_utts,
        "limit": cfg.limit,
    }


def prepare_rows(rows: list[dict[str, Any]], tokens: list[str]) -> list[tuple[dict[str, Any], list[int]]]:
    """Rows whose normalised text is non-empty and spelled in ``tokens``, with their ids."""
    kept = []
    for row in rows:
        text = normalize_text(row["text"])
        try:
            ids = text_to_ids(text, tokens) if text else []
        except ValueError:
            ids = []
        if ids:
            kept.append(({**row, "text": text}, ids))
    return kept


def encode_shard(
    model: WhisperCTC, frontend: WhisperLogMel, rows: list[tuple[dict[str, Any], list[int]]], cfg: CacheConfig
) -> dict[str, Any]:
    """The frozen states (fp16) of a shard's utterances, in batches of similar length, with their targets."""
    with ThreadPoolExecutor(cfg.threads) as pool:
        waves = list(pool.map(lambda r: read_audio(r[0]["audio"]), rows))
    keep = [i for i, w in enumerate(waves) if 0 < w.size < MAX_SECONDS * SAMPLE_RATE]
    keep.sort(key=lambda i: waves[i].size)
    states: dict[int, Tensor] = {}
    start = 0
    while start < len(keep):
        end = start + 1
        while end < len(keep) and waves[keep[end]].size * (end - start + 1) <= cfg.batch_seconds * SAMPLE_RATE:
            end += 1
        audio, lengths = waves_to_batch([waves[i] for i in keep[start:end]])
        with torch.inference_mode():
            feats, frame_lengths = frontend(audio, lengths)
            out, out_lengths = encode_frozen(model, feats, frame_lengths)
        for row, i in enumerate(keep[start:end]):
            states[i] = out[row, : int(out_lengths[row])].half()
        start = end
    order = [i for i in range(len(rows)) if i in states and states[i].shape[0] >= len(rows[i][1])]
    return {
        "states": torch.cat([states[i] for i in order]) if order else torch.zeros(0, model.config.d_model).half(),
        "lengths": torch.tensor([states[i].shape[0] for i in order], dtype=torch.long),
        "targets": torch.tensor([t for i in order for t in rows[i][1]], dtype=torch.long),
        "target_lengths": torch.tensor([len(rows[i][1]) for i in order], dtype=torch.long),
        "seconds": torch.tensor([waves[i].size / SAMPLE_RATE for i in order]),
        "texts": [rows[i][0]["text"] for i in order],
        "ids": [str(rows[i][0].get("id", rows[i][0]["audio"])) for i in order],
    }


def cache_set(name: str, manifest: Path, model: WhisperCTC, frontend: WhisperLogMel, cfg: CacheConfig) -> dict:
    """Write the shards of one manifest under ``root/name`` (skipping those already there); return its meta."""
    folder = Path(cfg.root) / name
    folder.mkdir(parents=True, exist_ok=True)
    config = whisper_ctc_config(tuned_layers=cfg.tuned_layers)
    want = cache_meta(config, manifest, cfg)
    meta_path = folder / META_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {**want, "shards": {}}
    stale = {k: (meta.get(k), v) for k, v in want.items() if meta.get(k) != v}
    if stale:
        raise SystemExit(f"{folder} was cached with other settings {stale}: delete it or pick another --root")
    rows = prepare_rows(read_manifest(manifest)[: cfg.limit or None], config.tokens)
    shards = range(0, len(rows), cfg.shard_utts)
    started, audio = time.time(), 0.0
    for k, first in enumerate(shards):
        path = folder / f"shard-{k:05d}.pt"
        if path.exists() and path.name in meta["shards"]:
            continue
        shard = encode_shard(model, frontend, rows[first : first + cfg.shard_utts], cfg)
        torch.save(shard, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)
        seconds = float(shard["seconds"].sum())
        meta["shards"][path.name] = {"utterances": len(shard["texts"]), "seconds": round(seconds, 2)}
        meta_path.write_text(json.dumps(meta, indent=1))
        audio += seconds
        rate = audio / (time.time() - started)
        logger.info("%s: shard %d/%d, %.2f h of audio at %.0f audio s/s", name, k + 1, len(shards), audio / 3600, rate)
    meta["utterances"] = sum(s["utterances"] for s in meta["shards"].values())
    meta["hours"] = round(sum(s["seconds"] for s in meta["shards"].values()) / 3600, 4)
    meta["skipped"] = len(read_manifest(manifest)[: cfg.limit or None]) - meta["utterances"]
    if audio:
        meta["rate"] = round(audio / (time.time() - started), 1)  # audio seconds per second, last run
    meta_path.write_text(json.dumps(meta, indent=1))
    logger.info("%s: %d utterances (%.2f h) cached in %s", name, meta["utterances"], meta["hours"], folder)
    return meta


def run_cache(cfg: CacheConfig) -> dict[str, dict]:
    """Cache every set of ``cfg.sets``; return their metas by name."""
    torch.set_num_threads(cfg.threads)
    frontend, model = build_model(whisper_ctc_config(tuned_layers=cfg.tuned_layers))
    model.eval()
    metas = {}
    for arg in cfg.sets:
        name, _, path = arg.rpartition("=")
        manifest = Path(path)
        metas[name or manifest.stem] = cache_set(name or manifest.stem, manifest, model, frontend, cfg)
    return metas


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


@dataclass
class State:
    """Progress that a checkpoint restores."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    train_seconds: float = 0.0
    best_dev: float = float("inf")
    history: list[dict[str, Any]] = field(default_factory=list)


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

    def record(kind: str, **values: Any) -> None:
        hours = round(state.train_seconds / 3600, 4)
        entry = {"kind": kind, "step": state.step, "epoch": state.epoch, "hours": hours, **values}
        log.write(json.dumps(entry) + "\n")
        log.flush()
        logger.info("%s", entry)

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
