"""The Whisper head recipe's data: cached encoder states in memory, their batches and SpecAugment on them."""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from app.asr.configs import BundleConfig
from train.config import HeadConfig
from train.data.dataset import parse_manifest_arg
from train.whisper_cache import META_FILE, first_tuned, weights_digest

logger = logging.getLogger(__name__)


@dataclass
class CachedSet:
    """One cached set in memory: per-utterance states (frames, d_model) fp16 and target ids."""

    name: str
    states: list[Tensor]
    targets: list[Tensor]
    texts: list[str]
    hours: float


def cached_folder(arg: str, root: Path) -> tuple[Path, int]:
    """The folder of a cached set named ``name[:repeats]`` (under ``root``, or a path) and its repeats."""
    path, repeats = parse_manifest_arg(arg)
    return (path if path.is_dir() else root / path), repeats


def cached_meta(folder: Path, config: BundleConfig, encoder_bundle: str = "") -> dict[str, Any]:
    """A cached set's meta, refused unless its states are those ``config``'s model reads: of its base,
    after its frozen blocks, and of ``encoder_bundle``'s tuned encoder (``cache --encoder-bundle``) or,
    without one, of the pretrained encoder."""
    if not (folder / META_FILE).is_file():
        raise SystemExit(f"{folder} is not cached (no {META_FILE}): run the cache step for it first")
    meta: dict[str, Any] = json.loads((folder / META_FILE).read_text())
    if meta["frozen_blocks"] != first_tuned(config.model) or meta["base_sha256"] != config.model.base.sha256:
        raise SystemExit(f"{folder} holds the states after {meta['frozen_blocks']} blocks of another base or depth")
    if meta.get("encoder_bundle", "") != (weights_digest(encoder_bundle) if encoder_bundle else ""):
        encoder = f"{encoder_bundle}'s" if encoder_bundle else "the pretrained"
        raise SystemExit(f"{folder} holds the states of another encoder than {encoder}")
    return meta


def load_cached(arg: str, root: Path, config: BundleConfig, encoder_bundle: str = "") -> tuple[CachedSet, int]:
    """A cached set named ``name[:repeats]`` (a folder under ``root``, or a path) and its repeats, its
    states checked by :func:`cached_meta` to be those ``config`` and ``encoder_bundle`` read."""
    folder, repeats = cached_folder(arg, root)
    meta = cached_meta(folder, config, encoder_bundle)
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


def load_data(
    cfg: HeadConfig, config: BundleConfig, encoder_bundle: str = ""
) -> tuple[list[CachedSet], list[int], list[CachedSet], dict[str, Any]]:
    """The training sets with their repeats, the dev sets (at most ``dev_limit`` utterances each) and a
    summary; every set's states must be of ``encoder_bundle``'s encoder (the pretrained one without)."""
    root = Path(cfg.cache_root)
    loaded = [load_cached(arg, root, config, encoder_bundle) for arg in cfg.train]
    train_sets, repeats = [c for c, _ in loaded], [r for _, r in loaded]
    dev = [load_cached(arg, root, config, encoder_bundle)[0] for arg in cfg.dev]
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
