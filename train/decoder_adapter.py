"""A low-rank adapter of Whisper's pretrained decoder (``python -m train.decoder_adapter``): cache, train, export.

The second pass reads the untouched pretrained encoder, at each clip's own length or on the 30 s
window (``--states``), so those states never change: ``cache`` computes them once per utterance
(fp16, 50 x 384 per second or 1500 x 384 per window) with the Whisper-style text target.
``train`` then fits rank-r matrices beside the decoder's linear layers
(``app.asr.whisper.adapter.ADAPTED``) by teacher forcing, the pretrained weights frozen: the
decoder learns the voices and accents of the training speech without forgetting its English.
``export`` stores the adapter in a bundle (float16) and sets ``decoder_adapter_rank`` in its
config; every runtime merges it into the decoder's weights at load.

Resumable: ``train`` saves ``OUT/last.pt`` at every evaluation and ``--resume`` continues from it.
Sentences of the evaluation sets are never trained on: ``cache --exclude`` drops every utterance
whose text is one of theirs.

Examples::

    python -m train.decoder_adapter cache --manifest data/manifests/so762_train.jsonl \\
        --out data/cache/whisper-window/so762_train --exclude data/manifests/so762_test.jsonl ...
    python -m train.decoder_adapter train --train data/cache/whisper-window/so762_train \\
        data/cache/whisper-window/dctts:3 --dev data/cache/whisper-window/so762_dev --out runs/decoder-adapter
    python -m train.decoder_adapter export --adapter runs/decoder-adapter/last.pt --model models/en-whisper-tiny
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, get_args

import numpy as np
import torch
from safetensors.numpy import save_file
from torch import Tensor, nn

from app.asr.bundle import load_bundle
from app.asr.bundle_files import WEIGHTS_FILE, read_bundle_files, write_network_settings
from app.asr.configs import CROSS_ATTENTION, SecondPassStates, WhisperCTCConfig
from app.asr.features import WhisperLogMel
from app.asr.text import normalize_text
from app.asr.whisper.adapter import ADAPTED, PREFIX
from app.asr.whisper.model import SecondPass
from train.config import add_flags, given
from train.data.audio_io import read_audio, read_manifest

logger = logging.getLogger(__name__)

STATES_FILE = "states.npy"
TARGETS_FILE = "targets.json"
MAX_SECONDS = 29.0  # room for the window's end


# ---------------------------------------------------------------- step 1: cache the window states


def whisper_style(text: str) -> str:
    """A lower-case unpunctuated transcript written as Whisper writes one (a capital first letter,
    ``I``, a full stop), so the adapter learns the speech, not a new way of writing; text that has
    capitals or punctuation already is kept as it is."""
    text = " ".join(text.split())
    if text != text.lower() or re.search(r"[.,?!]", text):
        return text
    text = re.sub(r"\bi\b", "I", text)
    return text[:1].upper() + text[1:] + "."


def run_cache(
    manifest: Path,
    out: Path,
    model: Path,
    exclude: list[Path],
    limit: int | None,
    seed: int = 0,
    batch: int = 8,
    states: SecondPassStates | None = None,
) -> Path:
    """Encode ``manifest``'s utterances (shuffled with ``seed``, at most ``limit``, none whose
    sentence is in an ``exclude`` manifest) as the second pass reads them (``states``, default the
    bundle's ``second_pass_states``), and write their states and targets to ``out``: the 30 s
    window per utterance, or each utterance's own frames end to end (``CachedWindows``)."""
    config, _ = read_bundle_files(model)
    if not isinstance(config.model, WhisperCTCConfig):
        raise SystemExit(f"{model} is not a Whisper bundle")
    excluded = {normalize_text(row["text"]) for path in exclude for row in read_manifest(path)}
    rows = [
        r
        for r in read_manifest(manifest)
        if normalize_text(r["text"]) not in excluded and r.get("duration", 0.0) < MAX_SECONDS
    ]
    random.Random(seed).shuffle(rows)
    rows = rows[:limit]
    mode = states or config.model.second_pass_states
    second = SecondPass.from_base(config.model.model_copy(update={"second_pass_states": mode}))  # not adapted
    frontend = WhisperLogMel(config.frontend)  # type: ignore[arg-type]
    out.mkdir(parents=True, exist_ok=True)
    windows = None
    if mode == "window":
        shape = (len(rows), config.model.max_frames, config.model.d_model)
        windows = np.lib.format.open_memmap(out / STATES_FILE, mode="w+", dtype=np.float16, shape=shape)
    pieces: list[np.ndarray] = []
    targets: list[dict[str, Any]] = []
    frames_so_far = 0
    started = time.perf_counter()
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        audio = [read_audio(r["audio"]) for r in chunk]
        waves = torch.zeros(len(audio), max(len(a) for a in audio))
        for i, a in enumerate(audio):
            waves[i, : len(a)] = torch.from_numpy(a)
        with torch.inference_mode():
            features, lengths = frontend(waves, torch.tensor([len(a) for a in audio]))
            encoded, state_lengths = second.encode(features, lengths)
        encoded16 = encoded.numpy().astype(np.float16)
        for i, row in enumerate(chunk):
            target = whisper_style(row["text"])
            ids = second.tokenizer.encode(" " + target)
            entry: dict[str, Any] = {"text": row["text"], "target": target, "ids": ids}
            if windows is not None:
                windows[start + i] = encoded16[i]
            else:
                frames = int(state_lengths[i])
                pieces.append(encoded16[i, :frames])
                entry |= {"start": frames_so_far, "frames": frames}
                frames_so_far += frames
            targets.append(entry)
        if start % (50 * batch) == 0:
            logger.info("%s: %d / %d in %.0f s", out.name, start + len(chunk), len(rows), time.perf_counter() - started)
    if windows is not None:
        windows.flush()
    else:
        np.save(out / STATES_FILE, np.concatenate(pieces))
    summary = {"manifest": str(manifest), "utterances": len(rows), "states": mode}
    summary["excluded"] = [str(p) for p in exclude]
    (out / TARGETS_FILE).write_text(json.dumps({**summary, "targets": targets}) + "\n")
    return out


# ---------------------------------------------------------------- step 2: train


class LowRank(nn.Module):
    """A frozen linear layer plus ``(x @ down.T) @ up.T * scale``; ``up`` starts at zero, so training
    starts from the pretrained decoder exactly."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float) -> None:
        super().__init__()
        self.base = base
        self.down = nn.Parameter(torch.randn(rank, base.in_features) / math.sqrt(base.in_features))
        self.up = nn.Parameter(torch.zeros(base.out_features, rank))
        self.scale = alpha / rank
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x) + (self.dropout(x) @ self.down.T) @ self.up.T * self.scale


def attach(
    decoder: nn.Module, rank: int, alpha: float, dropout: float, layers: tuple[str, ...] = CROSS_ATTENTION
) -> dict[str, LowRank]:
    """Freeze ``decoder`` (a ``WhisperDecoder``) and wrap each adapted layer of each block; returns
    the wrappers by their bundle name (``blocks.<i>.<layer>``)."""
    for parameter in decoder.parameters():
        parameter.requires_grad_(False)
    wrappers = {}
    for i, block in enumerate(decoder.blocks):  # type: ignore[arg-type]
        for layer in layers:
            owner_name, leaf = layer.rsplit(".", 1)
            owner = block.get_submodule(owner_name)
            wrapper = LowRank(getattr(owner, leaf), rank, alpha, dropout)
            setattr(owner, leaf, wrapper)
            wrappers[f"blocks.{i}.{layer}"] = wrapper
    return wrappers


def adapter_weights(wrappers: dict[str, LowRank]) -> dict[str, np.ndarray]:
    """The adapter as a bundle stores it (``app.asr.whisper.adapter``): the scale folded into ``up``."""
    weights = {}
    for name, wrapper in wrappers.items():
        weights[f"{PREFIX}{name}.down"] = wrapper.down.detach().float().numpy().copy()
        weights[f"{PREFIX}{name}.up"] = (wrapper.up.detach().float() * wrapper.scale).numpy().copy()
    return weights


@dataclass
class AdapterConfig:
    train: list[str]  # cache folders, each optionally ":repeats"
    dev: list[str]
    out: Path
    model: Path = Path("models/en-whisper-tiny")
    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.1
    lr: float = 1e-3
    warmup: int = 50
    steps: int = 1000
    batch: int = 16
    eval_every: int = 100
    seed: int = 0
    # adapting every layer lost some English (docs/benchmarks.md)
    layers: tuple[str, ...] = field(default=CROSS_ATTENTION, metadata={"choices": ADAPTED})
    resume: bool = False

    def __post_init__(self) -> None:
        self.layers = tuple(self.layers)  # given as a list on the command line


class CachedWindows:
    """A cache folder: states (memory-mapped) and token targets. States are either one fixed window
    per utterance (utterances, frames, d_model) or, for states of each utterance's own length, all
    frames end to end (frames, d_model) with each target's ``start`` and ``frames``."""

    def __init__(self, folder: Path) -> None:
        self.name = folder.name
        self.states = np.load(folder / STATES_FILE, mmap_mode="r")
        self.mode: SecondPassStates = "window" if self.states.ndim == 3 else "own_length"
        targets = json.loads((folder / TARGETS_FILE).read_text())["targets"]
        self.ids = [t["ids"] for t in targets]
        self.spans = [(t["start"], t["frames"]) for t in targets] if self.states.ndim == 2 else None

    def window(self, i: int) -> np.ndarray:
        if self.spans is None:
            return self.states[i]
        start, frames = self.spans[i]
        return self.states[start : start + frames]


def parse_sets(args: list[str]) -> list[tuple[CachedWindows, int]]:
    sets = []
    for arg in args:
        folder, _, repeats = arg.partition(":")
        sets.append((CachedWindows(Path(folder)), int(repeats or 1)))
    return sets


def batch_of(
    items: list[tuple[CachedWindows, int]], prompt: tuple[int, ...], end: int
) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
    """States (batch, frames, d_model) zero past each row's frames, their key mask (None when no
    row is shorter), input tokens and targets (batch, n): the prompt and text in, the text and
    end-of-text out; padding and the prompt's own targets are -100 (not scored)."""
    windows = [s.window(i) for s, i in items]
    frames = max(len(w) for w in windows)
    states = torch.zeros(len(items), frames, windows[0].shape[-1])
    for row, window in enumerate(windows):
        states[row, : len(window)] = torch.from_numpy(window.astype(np.float32))
    lengths = torch.tensor([len(w) for w in windows])
    mask = None if int(lengths.min()) == frames else (torch.arange(frames)[None, :] < lengths[:, None])[:, None, None]
    sequences = [[*prompt, *s.ids[i], end] for s, i in items]
    n = max(len(q) for q in sequences) - 1
    inputs = torch.full((len(items), n), end)
    targets = torch.full((len(items), n), -100)
    for row, q in enumerate(sequences):
        inputs[row, : len(q) - 1] = torch.tensor(q[:-1])
        targets[row, len(prompt) - 1 : len(q) - 1] = torch.tensor(q[len(prompt) :])
    return states, mask, inputs, targets


def token_loss(
    decoder: nn.Module, states: Tensor, mask: Tensor | None, inputs: Tensor, targets: Tensor
) -> tuple[Tensor, int]:
    """Summed cross-entropy of the scored targets, and their count."""
    logits, _ = decoder(inputs, None, decoder.cross_keys(states), mask)  # type: ignore[operator]
    loss = nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum")
    return loss, int((targets != -100).sum())


@torch.no_grad()
def dev_loss(
    decoder: nn.Module, sets: list[tuple[CachedWindows, int]], prompt: tuple[int, ...], end: int
) -> dict[str, float]:
    """Mean token cross-entropy per dev set (teacher forced)."""
    decoder.eval()
    losses = {}
    for cached, _ in sets:
        total, count = 0.0, 0
        for start in range(0, len(cached.ids), 16):
            items = [(cached, i) for i in range(start, min(start + 16, len(cached.ids)))]
            loss, n = token_loss(decoder, *batch_of(items, prompt, end))
            total, count = total + float(loss), count + n
        losses[cached.name] = round(total / max(count, 1), 4)
    decoder.train()
    return losses


def run_train(cfg: AdapterConfig) -> Path:
    """Train the adapter; write ``last.pt`` (with the optimiser, to resume) at every evaluation."""
    torch.manual_seed(cfg.seed)
    config, _ = read_bundle_files(cfg.model)
    if not isinstance(config.model, WhisperCTCConfig):
        raise SystemExit(f"{cfg.model} is not a Whisper bundle")
    cfg.out.mkdir(parents=True, exist_ok=True)
    last = cfg.out / "last.pt"
    saved = torch.load(last, weights_only=False) if cfg.resume and last.exists() else None
    if saved is not None:  # the adapter's shape is the saved run's
        cfg.rank, cfg.alpha, cfg.layers = saved["config"]["rank"], saved["config"]["alpha"], saved["config"]["layers"]
    second = SecondPass.from_base(config.model)
    decoder = second.decoder.train()
    wrappers = attach(decoder, cfg.rank, cfg.alpha, cfg.dropout, tuple(cfg.layers))
    parameters = [p for w in wrappers.values() for p in (w.down, w.up)]
    optimizer = torch.optim.AdamW(parameters, lr=cfg.lr, weight_decay=0.01)
    step, history = 0, list[dict[str, object]]()
    if saved is not None:
        for name, wrapper in wrappers.items():
            wrapper.down.data.copy_(saved["down"][name])
            wrapper.up.data.copy_(saved["up"][name])
        optimizer.load_state_dict(saved["optimizer"])
        step, history = saved["step"], saved["history"]
        logger.info("resumed at step %d", step)

    def scale(s: int) -> float:
        return min(1.0, (s + 1) / cfg.warmup) * 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps))

    train_sets, dev_sets = parse_sets(cfg.train), parse_sets(cfg.dev)
    modes = {s.mode for s, _ in train_sets + dev_sets}
    if len(modes) != 1:
        raise SystemExit(f"the caches hold states of different kinds ({', '.join(sorted(modes))}): make them alike")
    states = modes.pop()
    items = [(s, i) for s, repeats in train_sets for i in range(len(s.ids)) for _ in range(repeats)]
    logger.info("adapter: %d parameters, %d training items", sum(p.numel() for p in parameters), len(items))
    prompt, end = second.rules.prompt, second.rules.end_of_text
    rng = random.Random(cfg.seed * 1_000_003 + step)  # a resumed run draws new batches
    order: list[tuple[CachedWindows, int]] = []
    if step == 0:
        history.append({"step": 0, "dev": dev_loss(decoder, dev_sets, prompt, end)})
        logger.info("step 0: dev %s", history[-1]["dev"])
    started, running = time.perf_counter(), None
    while step < cfg.steps:
        if len(order) < cfg.batch:
            order = items[:]
            rng.shuffle(order)
        batch, order = order[: cfg.batch], order[cfg.batch :]
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * scale(step)
        loss, count = token_loss(decoder, *batch_of(batch, prompt, end))
        optimizer.zero_grad()
        (loss / count).backward()
        nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        step += 1
        value = float(loss.detach()) / count
        running = value if running is None else 0.95 * running + 0.05 * value
        if step % 20 == 0:
            logger.info("step %d: loss %.4f (%.1f s per step)", step, running, (time.perf_counter() - started) / 20)
            started = time.perf_counter()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            dev = dev_loss(decoder, dev_sets, prompt, end)
            history.append({"step": step, "train": round(running, 4), "dev": dev})
            logger.info("step %d: dev %s", step, dev)
            payload = {
                "step": step,
                "history": history,
                "down": {n: w.down.detach().clone() for n, w in wrappers.items()},
                "up": {n: w.up.detach().clone() for n, w in wrappers.items()},
                "weights": adapter_weights(wrappers),
                "states": states,
                "optimizer": optimizer.state_dict(),
                "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
            }
            torch.save(payload, cfg.out / "last.tmp")
            (cfg.out / "last.tmp").replace(last)
            torch.save({"weights": payload["weights"], "states": states}, cfg.out / f"adapter_{step}.pt")
    return last


# ---------------------------------------------------------------- step 3: export


def run_export(adapter: Path, model: Path) -> Path:
    """Store the adapter (a ``last.pt`` or an ``adapter_<step>.pt``) in the bundle ``model``, replacing
    any it had, and set its rank, layers and the states it was trained on (``second_pass_states``:
    the served second pass reads what its adapter learnt from) in the config; the bundle is then
    loaded as the server loads it."""
    saved = torch.load(adapter, weights_only=False)
    weights: dict[str, np.ndarray] = saved.get("weights", saved)
    states = saved.get("states", "window")  # earlier runs trained on the 30 s window only
    store_adapter(model, weights, states)
    load_bundle(model)
    return model


def store_adapter(model: Path, weights: dict[str, np.ndarray], states: str) -> None:
    """Write the adapter ``weights`` (``PREFIX``-named) into the bundle ``model`` in float16, replacing
    any it had, with its rank, layers and ``second_pass_states`` in the config."""
    config, stored = read_bundle_files(model)
    if not isinstance(config.model, WhisperCTCConfig):
        raise SystemExit(f"{model} is not a Whisper bundle")
    rank = next(v.shape[0] for k, v in weights.items() if k.endswith(".down"))
    kept = {k: v for k, v in stored.items() if not k.startswith(PREFIX)}
    state = {k: np.ascontiguousarray(v, dtype=np.float16) for k, v in {**kept, **weights}.items()}
    save_file(state, str(model / WEIGHTS_FILE), metadata={"name": config.name, "format": "pt"})
    layers = [layer for layer in ADAPTED if f"{PREFIX}blocks.0.{layer}.down" in weights]
    write_network_settings(model, decoder_adapter_rank=rank, decoder_adapter_layers=layers, second_pass_states=states)
    logger.info("adapter of rank %d (trained on %s states) written to %s", rank, states, model)


# ---------------------------------------------------------------- command line


def run(argv: list[str] | None = None) -> Path:
    """Run ``python -m train.decoder_adapter {cache,train,export} ...``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["cache", "train", "export"])
    args, rest = parser.parse_known_args(argv)
    sub = argparse.ArgumentParser(prog=f"python -m train.decoder_adapter {args.step}")
    if args.step == "train":
        add_flags(sub, AdapterConfig)
        return run_train(AdapterConfig(**given(sub.parse_args(rest))))
    sub.add_argument("--model", type=Path, default=Path("models/en-whisper-tiny"))
    if args.step == "cache":
        sub.add_argument("--manifest", type=Path, required=True)
        sub.add_argument("--out", type=Path, required=True)
        sub.add_argument("--exclude", type=Path, nargs="*", default=[], help="manifests whose sentences are left out")
        sub.add_argument("--limit", type=int, default=None)
        sub.add_argument("--seed", type=int, default=0)
        sub.add_argument(
            "--states", choices=get_args(SecondPassStates), help="default: the bundle's second_pass_states"
        )
        c = sub.parse_args(rest)
        return run_cache(c.manifest, c.out, c.model, c.exclude, c.limit, c.seed, states=c.states)
    if args.step == "export":
        sub.add_argument("--adapter", type=Path, required=True)
        e = sub.parse_args(rest)
        return run_export(e.adapter, e.model)


if __name__ == "__main__":
    run()
