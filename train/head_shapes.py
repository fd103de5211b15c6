"""The CTC head's shape, measured side by side (``python -m train.head_shapes``).

The shipped head is one linear layer over each encoder frame. A head that also sees the frames
around each (a small convolution) or the whole utterance (a bidirectional LSTM) might spell better
from the same states. Each shape here trains from scratch on the same cached states of Whisper
tiny.en's frozen pretrained encoder (all four blocks), with the same data, steps, schedule, seed and
SpecAugment; the dev sets choose its checkpoint (mean greedy WER), and that checkpoint is scored on
the test sets greedily and with a bundle's beam search and LM (the shipped one's, as tuned for its
own head, the same for every shape).

    python -m train.head_shapes cache                       # the frozen encoder's states, about 5 minutes
    python -m train.head_shapes train --shape conv          # runs/head-shapes/conv/result.json, head.pt
    python -m train.head_shapes report runs/head-shapes/*/result.json

How deep the head reads: ``cache --depth 3 --root R`` and ``train --depth 3 --cache-root R`` read the
states after three of the four blocks (``ln_post`` still normalises them). ``train.head_fusion``
combines two runs' heads.

The same on a bundle's tuned encoder (``cache --bundle models/en-whisper-tiny --root R``, then ``train
--bundle models/en-whisper-tiny --cache-root R``; ``--init-head`` starts a linear or conv head from
the bundle's own head, and ``--steps 0`` scores that head alone).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from app.asr.beam import BeamDecoder, load_lexicon_lm
from app.asr.bundle import build_model, load_bundle
from app.asr.bundle_files import LM_FOLDER
from app.asr.configs import BundleConfig, whisper_ctc_config
from app.asr.text import spoken_form
from train.config import HeadConfig, add_flags, given
from train.data.audio_io import read_manifest
from train.data.dataset import BucketBatchSampler
from train.scoring import greedy_decoder, score
from train.whisper_cache import CacheConfig, run_cache
from train.whisper_data import CachedSet, cached_folder, cached_meta, collate, load_cached, load_data
from train.whisper_head import lr_scale

logger = logging.getLogger(__name__)

SHAPES = ("linear", "conv", "lstm")
CACHE_ROOT = "data/cache/head-shapes"
MANIFESTS = Path("data/manifests")
DATA = Path("../shared/data")
TEST_SETS = ("cv100_eval", "so762_test200")
LAYERS = whisper_ctc_config().model.encoder_layers  # Whisper tiny.en's encoder blocks (4)
HEAD_FILE = "head.pt"  # a run's best head (its state dict), beside result.json


def frozen_config(depth: int = LAYERS) -> BundleConfig:
    """Whisper tiny.en read after its first ``depth`` blocks (all four by default): its cache holds
    the states there, and the blocks after them are not run."""
    return whisper_ctc_config(tuned_layers=after(depth))


def after(depth: int) -> list[int]:
    """The encoder blocks after the first ``depth``: those a head reading there leaves out."""
    if not 1 <= depth <= LAYERS:
        raise SystemExit(f"--depth is 1 to {LAYERS} blocks, not {depth}")
    return list(range(depth, LAYERS))


class CTCHead(nn.Module):
    """Encoder states (batch, frames, d_model) before ``ln_post`` -> CTC log-probs (batch, frames, vocab).

    ``linear``: one linear layer per frame (the shipped head). ``conv``: a residual convolution over
    ``kernel`` frames (GELU) before it. ``lstm``: a bidirectional LSTM of ``hidden`` units each way
    before it (two one-way LSTMs on padded rows, the backward one over each row reversed within its
    length: the same as packed sequences, and many times faster on a CPU). The encoder's final layer
    norm is the pretrained one, frozen.
    """

    def __init__(
        self, shape: str, ln_post: nn.LayerNorm, vocab: int, dropout: float, kernel: int = 5, hidden: int = 256
    ) -> None:
        super().__init__()
        if shape not in SHAPES:
            raise ValueError(f"unknown head shape {shape!r}: one of {', '.join(SHAPES)}")
        self.shape = shape
        self.ln_post = copy.deepcopy(ln_post).requires_grad_(False)
        width = d_model = ln_post.normalized_shape[0]
        if shape == "conv":
            self.conv = nn.Conv1d(d_model, d_model, kernel, padding=kernel // 2)
        elif shape == "lstm":
            self.forward_lstm = nn.LSTM(d_model, hidden, batch_first=True)
            self.backward_lstm = nn.LSTM(d_model, hidden, batch_first=True)
            width = 2 * hidden
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(width, vocab)

    def forward(self, states: Tensor, lengths: Tensor) -> Tensor:
        frames = states.shape[1]
        valid = (torch.arange(frames)[None, :] < lengths[:, None])[:, :, None]
        x = self.ln_post(states) * valid  # padding stays zero, so a row reads as it would alone
        if self.shape == "conv":
            x = (x + F.gelu(self.conv(x.transpose(1, 2)).transpose(1, 2))) * valid
        elif self.shape == "lstm":
            x = torch.cat([self.forward_lstm(x)[0], self.backward_lstm_run(x, lengths)], dim=-1)
        return torch.log_softmax(self.out(self.dropout(x)).float(), dim=-1)

    def backward_lstm_run(self, x: Tensor, lengths: Tensor) -> Tensor:
        """The backward LSTM over each row's own frames, last to first (padding stays after them)."""
        frames = x.shape[1]
        t = torch.arange(frames)[None, :]
        flip = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)[:, :, None]  # its own inverse
        out = self.backward_lstm(x.gather(1, flip.expand_as(x)))[0]
        return out.gather(1, flip.expand(-1, -1, out.shape[2]))

    def trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


@dataclass
class ShapeRun:
    """Settings of one ``train`` run (the rest, batches among them, are :class:`HeadConfig`'s defaults)."""

    shape: str = field(default="linear", metadata={"choices": SHAPES})
    out: str = "runs/head-shapes"  # the run writes OUT/<shape>/result.json and its best head, head.pt
    cache_root: str = CACHE_ROOT
    train: list[str] = field(default_factory=lambda: ["synth_train", "so762_train:3", "dctts:3"])
    dev: list[str] = field(default_factory=lambda: ["synth_dev", "so762_dev"])
    test: list[str] = field(default_factory=lambda: list(TEST_SETS))
    steps: int = 3000
    eval_steps: int = 500
    lr: float = 1e-3
    warmup_steps: int = 200
    kernel: int = 5
    hidden: int = 256
    lm_bundle: str = "models/en-whisper-tiny"  # whose LM folder and beam settings score the test sets
    bundle: str = ""  # the states are this bundle's encoder's (``cache --bundle``), not the pretrained one's
    depth: int = LAYERS  # the states after this many encoder blocks (``cache --depth``)
    init_head: bool = False  # start from --bundle's head (linear or conv); its own dev WER is step 0
    dropout: float = HeadConfig.dropout  # before the output layer
    time_masks: int = HeadConfig.time_masks  # SpecAugment on the states, as HeadConfig's
    time_mask_frames: int = HeadConfig.time_mask_frames
    channel_masks: int = HeadConfig.channel_masks
    channel_mask_width: int = HeadConfig.channel_mask_width
    threads: int = 2
    seed: int = 1234


def decode_set(head: CTCHead, cached: CachedSet) -> list[np.ndarray]:
    """Each utterance's (frames, vocab) log-probs, in the set's order."""
    head.eval()
    out: list[np.ndarray] = [np.empty(0)] * len(cached.states)
    order = sorted(range(len(cached.states)), key=lambda i: cached.states[i].shape[0])
    index = [(0, u) for u in range(len(cached.states))]
    with torch.no_grad():
        for start in range(0, len(order), 32):
            rows = order[start : start + 32]
            batch = collate([cached], index, rows, HeadConfig(), None)  # padded, without SpecAugment
            log_probs = head(batch["states"], batch["lengths"])
            for r, i in enumerate(rows):
                out[i] = log_probs[r, : batch["lengths"][r]].numpy()
    head.train()
    return out


def greedy_wer(config: BundleConfig, log_probs: list[np.ndarray], texts: list[str]) -> float:
    decoder = greedy_decoder(config)
    return round(score(texts, [decoder.decode(lp).text for lp in log_probs]).wer, 4)


def check_encoder(run: ShapeRun, sets: list[str] | None = None) -> None:
    """Refuse, before any training, cached sets (``run``'s train, dev and test sets by default) whose
    states are not those its head reads: of ``run.bundle``'s encoder (or the pretrained one), after
    ``run.depth`` blocks (:func:`train.whisper_data.cached_meta`)."""
    config = frozen_config(run.depth)
    for arg in [*run.train, *run.dev, *run.test] if sets is None else sets:
        cached_meta(cached_folder(arg, Path(run.cache_root))[0], config, run.bundle)


def new_head(run: ShapeRun, config: BundleConfig) -> CTCHead:
    """The head to train: from scratch, or with ``init_head`` as ``run.bundle``'s head exactly (a
    convolution starts at zero, so only the linear layer reads at first)."""
    _, model = build_model(config)
    head = CTCHead(run.shape, model.encoder.ln_post, config.model.vocab_size, run.dropout, run.kernel, run.hidden)
    if run.init_head:
        if run.shape == "lstm" or not run.bundle:
            raise SystemExit("--init-head starts a linear or conv head from --bundle's head")
        weights = load_bundle(run.bundle).model.trained_state()
        head.out.load_state_dict({"weight": weights["head.weight"].float(), "bias": weights["head.bias"].float()})
        if run.shape == "conv":
            nn.init.zeros_(head.conv.weight)
            nn.init.zeros_(head.conv.bias)
    return head


def head_config(run: ShapeRun) -> HeadConfig:
    """The recipe's settings for ``run``: its data, schedule, dropout and SpecAugment, the rest HeadConfig's."""
    return HeadConfig(
        train=run.train, dev=run.dev, cache_root=run.cache_root, tuned_layers=after(run.depth), seed=run.seed,
        warmup_steps=run.warmup_steps, max_steps=run.steps, dropout=run.dropout, time_masks=run.time_masks,
        time_mask_frames=run.time_mask_frames, channel_masks=run.channel_masks,
        channel_mask_width=run.channel_mask_width,
    )  # fmt: skip


def train_shape(run: ShapeRun) -> tuple[dict[str, Any], CTCHead]:
    """Train one head shape for ``run.steps``; score its best dev checkpoint on the test sets.

    Returns the result and that checkpoint's head."""
    torch.manual_seed(run.seed)
    torch.set_num_threads(run.threads)
    torch.set_flush_denormal(True)  # weights started at zero otherwise slow the CPU down step by step
    check_encoder(run)
    config = frozen_config(run.depth)
    cfg = head_config(run)
    train_sets, repeats, dev, data = load_data(cfg, config, run.bundle)
    head = new_head(run, config)
    optimizer = torch.optim.AdamW(
        [p for p in head.parameters() if p.requires_grad], lr=run.lr, weight_decay=cfg.weight_decay
    )
    index = [(s, u) for s, cached in enumerate(train_sets) for u in range(len(cached.states))]
    frames = [train_sets[s].states[u].shape[0] for s, u in index]
    sampler = BucketBatchSampler(frames, [repeats[s] for s, _ in index], cfg.batch_frames, run.seed, cfg.max_batch)
    rng = random.Random(run.seed)

    def batches() -> Any:
        epoch = 1  # epoch 0 would be the sorted curriculum
        while True:
            sampler.epoch = epoch
            for rows in sampler:
                yield collate(train_sets, index, rows, cfg, rng)
            epoch += 1

    logger.info("%s head: %d trainable parameters, %d utterances", run.shape, head.trainable(), len(index))
    curve: list[dict[str, Any]] = []
    best: dict[str, Any] = {"mean": float("inf")}
    started, stream = time.time(), batches()

    def evaluate(step: int, loss: float | None) -> None:
        """Greedy WER on the dev sets; the lowest mean yet is kept (its weights too)."""
        nonlocal best
        wer = {d.name: greedy_wer(config, decode_set(head, d), d.texts) for d in dev}
        wer["mean"] = round(sum(wer.values()) / len(wer), 4)
        seconds = time.time() - started
        curve.append({"step": step, "loss": loss, "dev_greedy": wer, "train_s": round(seconds)})
        logger.info("%s step %d: loss %s, dev greedy WER %s (%.0f s)", run.shape, step, loss, wer, seconds)
        if wer["mean"] < best["mean"]:
            best = {**wer, "step": step, "state": copy.deepcopy(head.state_dict())}

    if run.init_head or not run.steps:  # a bundle's own head is in the race; 0 steps scores it alone
        evaluate(0, None)
    for step in range(1, run.steps + 1):
        for group in optimizer.param_groups:
            group["lr"] = run.lr * lr_scale(step, 0.0, cfg)  # warm-up, then a cosine decay over the steps
        batch = next(stream)
        log_probs = head(batch["states"], batch["lengths"])
        loss = F.ctc_loss(
            log_probs.transpose(0, 1), batch["targets"], batch["lengths"], batch["target_lengths"],
            blank=config.blank_id, zero_infinity=True,
        )  # fmt: skip
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), cfg.grad_clip)
        optimizer.step()
        if step % 100 == 0:
            logger.info(
                "%s step %d: loss %.3f, %.2f s a step", run.shape, step, loss.item(), (time.time() - started) / step
            )
        if step % run.eval_steps == 0 or step == run.steps:
            evaluate(step, round(loss.item(), 3))
    train_seconds = time.time() - started
    head.load_state_dict(best.pop("state"))
    result = {
        "shape": run.shape,
        "settings": asdict(run),
        "trainable_parameters": head.trainable(),
        "data": data,
        "train_seconds": round(train_seconds),
        "seconds_per_step": round(train_seconds / max(1, run.steps), 3),
        "curve": curve,
        "best_dev_greedy": best,
        "test": test_scores(head, config, run),
    }
    return result, head


def test_scores(head: CTCHead, config: BundleConfig, run: ShapeRun) -> dict[str, dict[str, float]]:
    """Greedy and beam search + LM WER of ``head`` on each test set."""
    lm = load_lexicon_lm(Path(run.lm_bundle) / LM_FOLDER, config.tokens, config.blank_id, config.word_delimiter)
    if lm is None:
        raise SystemExit(f"no language model in {run.lm_bundle}/{LM_FOLDER}")
    beam = BeamDecoder(lm, lm.defaults, config.frame_seconds)
    out = {}
    for name in run.test:
        cached, _ = load_cached(name, Path(run.cache_root), config, run.bundle)
        log_probs = decode_set(head, cached)
        beam_hyps = [beam.decode(lp).text for lp in log_probs]
        out[name] = {
            "utterances": len(cached.texts),
            "greedy": greedy_wer(config, log_probs, cached.texts),
            "beam": round(score(cached.texts, beam_hyps).wer, 4),
        }
        logger.info("%s on %s: %s", run.shape, name, out[name])
    return out


def steps(result: dict[str, Any]) -> int:
    return int(result.get("settings", {}).get("steps", 1))


def label(result: dict[str, Any]) -> str:
    """A result's row name: its shape, and whether it started from (or is) a bundle's own head."""
    settings = result.get("settings", {})
    depth = settings.get("depth", LAYERS)
    where = f", after {depth} of {LAYERS} blocks" if depth != LAYERS else ""
    if not settings.get("init_head"):
        return f"{result['shape']}{where}"
    return f"the bundle's head{where}" if not steps(result) else f"{result['shape']}, from the bundle's head{where}"


def report(paths: list[Path]) -> str:
    """A Markdown table of ``train`` results, one row per shape."""
    results = [json.loads(p.read_text()) for p in paths]
    tests = sorted({name for r in results for name in r["test"]})
    devs = [k for k in results[0]["best_dev_greedy"] if k != "step"] if results else []
    header = ["head", "trainable parameters", "s/step", "best step", *(f"dev {d} greedy" for d in devs)]
    header += [f"{t} {kind}" for t in tests for kind in ("greedy", "beam")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        best = r["best_dev_greedy"]
        cells = [label(r), f"{r['trainable_parameters']:,}", str(r["seconds_per_step"]) if steps(r) else "-"]
        cells.append(str(best["step"]))
        cells += [f"{100 * best[d]:.1f}" for d in devs]
        cells += [f"{100 * r['test'][t][kind]:.1f}" for t in tests for kind in ("greedy", "beam")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def eval_manifests(data: Path, manifests: Path) -> dict[str, Path]:
    """The test sets as manifests: cv100 (its text in spoken form, as ``bench.peers_accuracy`` scores
    it) and the first 200 rows of speechocean762 ``test/`` (``make data``'s manifest)."""
    cv100 = manifests / "cv100_eval.jsonl"
    rows = [
        {**r, "audio": str(Path(r["audio"]).resolve()), "text": spoken_form(r["text"])}
        for r in read_manifest(data / "cv100" / "manifest.jsonl")
    ]
    cv100.write_text("".join(json.dumps(r) + "\n" for r in rows))
    so762 = manifests / "so762_test200.jsonl"
    so762.write_text("".join(json.dumps(r) + "\n" for r in read_manifest(manifests / "so762_test.jsonl")[:200]))
    return {"cv100_eval": cv100, "so762_test200": so762}


def cache(sets: list[str], root: str, threads: int, bundle: str = "", depth: int = LAYERS) -> dict[str, dict]:
    """The encoder states after ``depth`` blocks (before ``ln_post``) of ``name=manifest`` sets under
    ``root``: the pretrained encoder's, or with ``bundle`` those of that bundle's tuned blocks (each
    folder's meta records which and how deep, so states of two encoders or depths never mix)."""
    tuned = after(depth)
    return run_cache(CacheConfig(sets=sets, root=root, tuned_layers=tuned, threads=threads, encoder_bundle=bundle))


def run(argv: list[str] | None = None) -> Any:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["cache", "train", "report"])
    args, rest = parser.parse_known_args(argv)
    if args.step == "cache":
        sub = argparse.ArgumentParser(prog="python -m train.head_shapes cache")
        sub.add_argument("--data", type=Path, default=DATA, help="the shared data: cv100/ and dctts-reader/")
        sub.add_argument("--manifests", type=Path, default=MANIFESTS, help="make data's manifests")
        sub.add_argument("--root", default=CACHE_ROOT)
        sub.add_argument("--threads", type=int, default=2)
        sub.add_argument("--bundle", default="", help="cache this bundle's tuned encoder's states instead")
        sub.add_argument("--depth", type=int, default=LAYERS, help="the states after this many encoder blocks")
        c = sub.parse_args(rest)
        tests = eval_manifests(c.data, c.manifests)
        sets = [f"{name}={path}" for name, path in tests.items()]
        sets += [f"{n}={c.manifests / n}.jsonl" for n in ("synth_dev", "so762_dev", "so762_train", "synth_train")]
        sets.append(f"dctts={c.data / 'dctts-reader' / 'manifest.jsonl'}")
        return cache(sets, c.root, c.threads, c.bundle, c.depth)
    if args.step == "report":
        sub = argparse.ArgumentParser(prog="python -m train.head_shapes report")
        sub.add_argument("results", nargs="+", type=Path)
        table = report(sub.parse_args(rest).results)
        print(table)
        return table
    sub = argparse.ArgumentParser(prog="python -m train.head_shapes train")
    add_flags(sub, ShapeRun)
    shape_run = ShapeRun(**given(sub.parse_args(rest)))
    result, head = train_shape(shape_run)
    out = Path(shape_run.out) / shape_run.shape
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result, indent=1))
    torch.save(head.state_dict(), out / HEAD_FILE)
    return result


if __name__ == "__main__":
    run()
