"""Step 1 of the Whisper head recipe (``asr-train-head cache``): the frozen half of the encoder, run once.

The pretrained encoder's stem and its blocks before the first tuned one never change, so their
states are computed once per utterance and stored in fp16 shards; :func:`encode_frozen` and
:func:`encode_tuned` are the encoder split at the first tuned block, shared with training.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from app.asr.bundle import WEIGHTS_FILE, build_model, load_bundle
from app.asr.configs import BundleConfig, WhisperCTCConfig, whisper_ctc_config
from app.asr.ctc import text_to_ids
from app.asr.features import WhisperLogMel
from app.asr.text import normalize_text
from app.asr.whisper.model import WhisperCTC
from train.data.audio_io import SAMPLE_RATE, read_audio, read_manifest
from train.data.augment import AugmentConfig, augment_waveform, speed, vtlp_matrix

logger = logging.getLogger(__name__)

CACHE_ROOT = Path("data/cache/whisper-tiny-en")
META_FILE = "meta.json"
MAX_SECONDS = 30.0  # the encoder's positions cover 30 s

# Rooms and channels for an augmented copy of a set (``--augment``): each utterance gets its own
# chain of noise, other talkers, reverberation, a telephone or codec round trip and a gain change;
# its speed stays (speed-perturbed copies are cached apart, ``--speed``).
ROOMS = AugmentConfig(p_speed=0.0, p_gain=0.5, p_noise=0.5, p_babble=0.25, p_reverb=0.5, p_telephone=0.1, p_codec=0.15)


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
    speed: float = 1.0  # play every utterance this many times faster (pitch with it): a perturbed copy of a set
    augment: float = 0.0  # strength (0-1) of ROOMS on every utterance: an augmented copy of a set
    seed: int = 0  # with --augment or --warp: each utterance's effects are drawn from (seed, its id)
    warp: float = 0.0  # W > 0: each utterance's vocal tract length factor drawn from [1 - W, 1 + W] (VTLP)
    encoder_bundle: str = ""  # run this bundle's tuned encoder blocks, not the pretrained ones


UNRECORDED = {"speed": 1.0, "augment": 0.0, "seed": 0, "warp": 0.0, "encoder_bundle": ""}
"""Settings a cache folder's meta leaves out unless they matter, with the value a missing one means
(so folders written before a setting existed stay valid)."""


def cache_meta(config: BundleConfig, manifest: Path, cfg: CacheConfig) -> dict[str, Any]:
    """What a cache folder's states depend on; a folder written with other values is refused."""
    return {
        "manifest": str(manifest),
        "base_sha256": config.model.base.sha256,
        "frozen_blocks": first_tuned(config.model),
        "shard_utts": cfg.shard_utts,
        "limit": cfg.limit,
        **({"speed": cfg.speed} if cfg.speed != UNRECORDED["speed"] else {}),
        **({"augment": cfg.augment} if cfg.augment != UNRECORDED["augment"] else {}),
        **({"warp": cfg.warp} if cfg.warp != UNRECORDED["warp"] else {}),
        **({"seed": cfg.seed} if cfg.augment or cfg.warp else {}),
        **({"encoder_bundle": weights_digest(cfg.encoder_bundle)} if cfg.encoder_bundle else {}),
    }


@functools.cache
def weights_digest(bundle: str) -> str:
    """The sha256 of a bundle's weights file: whose encoder blocks a cache folder's states came from
    (a folder's meta records it as ``encoder_bundle``; none means the pretrained encoder's)."""
    return hashlib.sha256((Path(bundle) / WEIGHTS_FILE).read_bytes()).hexdigest()


def stale_settings(meta: dict[str, Any], want: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The settings (``cache_meta``'s, and :data:`UNRECORDED`'s where left out) in which a folder's
    meta differs from what is wanted: {name: (had, wanted)}."""
    stale = {}
    for key in [*want, *(k for k in UNRECORDED if k not in want)]:
        had, wanted = meta.get(key, UNRECORDED.get(key)), want.get(key, UNRECORDED.get(key))
        if had != wanted:
            stale[key] = (had, wanted)
    return stale


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


def in_rooms(waves: list[np.ndarray], ids: list[str], cfg: CacheConfig) -> list[np.ndarray]:
    """Every wave through its own chain of :data:`ROOMS` effects at ``cfg.augment``, drawn from
    ``(cfg.seed, id)`` so a shard recomputed gives the same audio; the other talkers are the
    shard's other utterances."""
    config = ROOMS.scaled(cfg.augment)
    out = []
    for i, (wave, utt) in enumerate(zip(waves, ids, strict=True)):
        rng = random.Random(f"{cfg.seed}:{utt}")
        others = [w for j, w in enumerate(waves) if j != i and w.size]

        def babble(rng: random.Random = rng, others: list[np.ndarray] = others) -> np.ndarray:
            return others[rng.randrange(len(others))]

        out.append(augment_waveform(wave, config, rng, babble if others else None) if wave.size else wave)
    return out


def warp_factor(utt: str, cfg: CacheConfig) -> float:
    """The vocal tract length factor of one utterance of a ``--warp`` copy, drawn from ``(cfg.seed, id)``."""
    return random.Random(f"warp:{cfg.seed}:{utt}").uniform(1.0 - cfg.warp, 1.0 + cfg.warp)


def warped_filters(frontend: WhisperLogMel, factors: list[float]) -> Tensor:
    """The frontend's mel filters warped by each factor: (len(factors), n_mels, freqs)."""
    n_freqs = frontend.filters.shape[1]
    return torch.stack([frontend.filters @ vtlp_matrix(n_freqs, f, frontend.config.sample_rate) for f in factors])


def encode_shard(
    model: WhisperCTC, frontend: WhisperLogMel, rows: list[tuple[dict[str, Any], list[int]]], cfg: CacheConfig
) -> dict[str, Any]:
    """The frozen states (fp16) of a shard's utterances, in batches of similar length, with their targets."""
    with ThreadPoolExecutor(cfg.threads) as pool:
        waves = list(pool.map(lambda r: speed(read_audio(r[0]["audio"]), cfg.speed), rows))
    ids = [str(r[0].get("id", r[0]["audio"])) for r in rows]
    if cfg.augment:
        waves = in_rooms(waves, ids, cfg)
    keep = [i for i, w in enumerate(waves) if 0 < w.size < MAX_SECONDS * SAMPLE_RATE]
    keep.sort(key=lambda i: waves[i].size)
    states: dict[int, Tensor] = {}
    start = 0
    while start < len(keep):
        end = start + 1
        while end < len(keep) and waves[keep[end]].size * (end - start + 1) <= cfg.batch_seconds * SAMPLE_RATE:
            end += 1
        audio, lengths = waves_to_batch([waves[i] for i in keep[start:end]])
        filters = warped_filters(frontend, [warp_factor(ids[i], cfg) for i in keep[start:end]]) if cfg.warp else None
        with torch.inference_mode():
            feats, frame_lengths = frontend(audio, lengths, filters)
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
        "ids": [ids[i] for i in order],
    }


def cache_set(name: str, manifest: Path, model: WhisperCTC, frontend: WhisperLogMel, cfg: CacheConfig) -> dict:
    """Write the shards of one manifest under ``root/name`` (skipping those already there); return its meta."""
    folder = Path(cfg.root) / name
    folder.mkdir(parents=True, exist_ok=True)
    config = whisper_ctc_config(tuned_layers=cfg.tuned_layers)
    want = cache_meta(config, manifest, cfg)
    meta_path = folder / META_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {**want, "shards": {}}
    stale = stale_settings(meta, want)
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
    if not 0.0 <= cfg.augment <= 1.0:
        raise SystemExit(f"--augment is a strength from 0 to 1, got {cfg.augment}")
    if not 0.0 <= cfg.warp < 0.5:
        raise SystemExit(f"--warp is the vocal tract length factor's largest change, from 0 to 0.5, got {cfg.warp}")
    torch.set_num_threads(cfg.threads)
    frontend, model = build_model(whisper_ctc_config(tuned_layers=cfg.tuned_layers))
    if cfg.encoder_bundle:
        weights = load_bundle(cfg.encoder_bundle).model.trained_state()
        model.load_state_dict({k: v for k, v in weights.items() if k.startswith("encoder.")}, strict=False)
    model.eval()
    metas = {}
    for arg in cfg.sets:
        name, _, path = arg.rpartition("=")
        manifest = Path(path)
        metas[name or manifest.stem] = cache_set(name or manifest.stem, manifest, model, frontend, cfg)
    return metas
