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
import functools
import json
import logging
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from app.asr.bundle import WEIGHTS_FILE, build_model, load_bundle, save_bundle
from app.asr.bundle_files import LM_FOLDER, read_bundle_files, write_network_settings
from app.asr.configs import BundleConfig, WhisperCTCConfig, whisper_ctc_config
from app.asr.ctc import greedy_decode
from app.asr.whisper.adapter import PREFIX as ADAPTER_PREFIX
from app.asr.whisper.model import WhisperCTC
from train.checkpoint import State, load_checkpoint, save_checkpoint
from train.config import HeadConfig, add_flags, given, parse_head_args
from train.data.dataset import BucketBatchSampler, parse_manifest_arg
from train.decoder_adapter import store_adapter
from train.loop import Every, Losses, Record, budget_spent, keep_best
from train.runlog import log_entry, plot_convergence, read_log
from train.scoring import score
from train.whisper_cache import CACHE_ROOT, META_FILE, CacheConfig, encode_tuned, run_cache
from train.whisper_card import model_card
from train.whisper_data import CachedSet, collate, load_data

__all__ = ["encode_tuned", "load_checkpoint", "run"]  # the names the recipe's tests use

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------- step 2: train


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
    model: WhisperCTC,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, Tensor],
    scale: float,
    cfg: HeadConfig,
    blank_id: int,
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
        blank=blank_id,
        reduction="mean",
        zero_infinity=True,
    )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    optimizer.step()
    return loss.item(), round(float(grad_norm), 3)


@dataclass
class HeadRun:
    """What a run trains and saves: its settings, the model with its bundle config, the optimizer, and
    the summary of the data (saved in each checkpoint for the model card)."""

    cfg: HeadConfig
    config: BundleConfig
    model: WhisperCTC
    optimizer: torch.optim.Optimizer
    data: dict[str, Any]

    def save(self, name: str, state: State, metrics: dict[str, float] | None = None) -> None:
        """Write ``OUT/name``: the trained weights only (with ``metrics`` in its bundle config, when given)."""
        config = self.config if metrics is None else self.config.model_copy(update={"metrics": metrics})
        path = Path(self.cfg.out) / name
        save_checkpoint(path, self.model.trained_state(), self.optimizer, config, self.cfg, state, data=self.data)

    def evaluate(self, dev: list[CachedSet], state: State, record: Record) -> None:
        """Score the dev sets; the lowest mean WER yet is written as ``best.pt``."""
        wer = evaluate_dev(self.model, self.config, dev, self.cfg)
        keep_best(wer, state, record, lambda best: self.save("best.pt", state, best))


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
    batches = (collate(train_sets, index, rows, cfg, rng if cfg.augment else None) for rows in epochs(sampler, state))
    run_loop(HeadRun(cfg, config, model, optimizer, data), batches, dev, state)
    return state


def epochs(sampler: BucketBatchSampler, state: State) -> Iterator[list[int]]:
    """Batches of rows epoch after epoch from where ``state`` stands; an epoch fully read moves ``state`` on."""
    while True:
        sampler.epoch, sampler.skip = state.epoch + 1, state.batch_in_epoch  # epoch 0 would be the sorted curriculum
        yield from sampler
        state.next_epoch()


def run_loop(run: HeadRun, batches: Iterator[dict[str, Tensor]], dev: list[CachedSet], state: State) -> None:
    """Train the head (and tuned blocks) with periodic dev evaluation and checkpoints, until the budget is spent."""
    cfg = run.cfg
    started = time.time() - state.train_seconds
    eval_timer, checkpoint_timer, losses = Every(cfg.eval_minutes), Every(cfg.checkpoint_minutes), Losses()
    with (Path(cfg.out) / "log.jsonl").open("a") as log:
        record = functools.partial(log_entry, log, state)
        # start: a bundle's own dev WER first, so best.pt is never worse than where it started
        if dev and cfg.init_bundle and state.step == 0:
            run.evaluate(dev, state, record)
        while not budget_spent(cfg, state):
            # step: one optimiser step at the scheduled fraction of each group's peak rate
            scale = lr_scale(state.step + 1, state.train_seconds / 3600, cfg)
            batch = next(batches)
            loss, grad_norm = train_step(run.model, run.optimizer, batch, scale, cfg, run.config.blank_id)
            state.advance(started, time.time())
            losses.add(loss)
            # log: the mean loss since the last entry, every log_steps steps
            if state.step % cfg.log_steps == 0:
                lr_head = round(cfg.lr_head * scale, 7)
                batch_size = len(batch["lengths"])
                record("train", loss=losses.take_mean(), lr_head=lr_head, grad_norm=grad_norm, batch=batch_size)
            # evaluate: the dev sets every eval_minutes; the best mean WER is kept as best.pt
            if dev and eval_timer.due():
                run.evaluate(dev, state, record)
                eval_timer.restart()
            # checkpoint: last.pt every checkpoint_minutes, to resume from
            if checkpoint_timer.due():
                run.save("last.pt", state)
                checkpoint_timer.restart()
        # end: a last evaluation and checkpoint
        if dev:
            run.evaluate(dev, state, record)
        run.save("last.pt", state)
        record("end", best_dev=state.best_dev)


# ---------------------------------------------------------------- step 3: export


CARRIED_SETTINGS = ("ctc_weight", "ctc_beams")
"""The second pass's tuned settings that a fine-tuned bundle keeps from the bundle it carries from."""


@dataclass
class Carried:
    """What a fine-tuned bundle keeps of another: the decoder's adapter (it reads the pretrained
    encoder, not the tuned blocks, so a new CTC head leaves it valid), the second pass's settings and
    the language model folder."""

    name: str
    adapter: dict[str, np.ndarray]
    states: str
    settings: dict[str, Any]
    lm: dict[str, bytes]

    @classmethod
    def read(cls, source: Path, config: BundleConfig) -> Carried:
        """Read it all into memory (an export may overwrite ``source``); refuse a bundle of another base."""
        theirs, stored = read_bundle_files(source)
        if not isinstance(theirs.model, WhisperCTCConfig) or theirs.model.base != config.model.base:
            raise SystemExit(f"{source} is not a bundle on this base ({config.model.base.file}), nothing to carry")
        lm = source / LM_FOLDER
        return cls(
            name=theirs.name,
            adapter={k: v for k, v in stored.items() if k.startswith(ADAPTER_PREFIX)},
            states=theirs.model.second_pass_states,
            settings={k: getattr(theirs.model, k) for k in CARRIED_SETTINGS},
            lm={f.name: f.read_bytes() for f in sorted(lm.iterdir()) if f.is_file()} if lm.is_dir() else {},
        )

    def write(self, out: Path) -> None:
        """Store it in the bundle ``out``."""
        if self.adapter:
            store_adapter(out, self.adapter, self.states)
        write_network_settings(out, **self.settings)
        if self.lm:
            (out / LM_FOLDER).mkdir(exist_ok=True)
            for name, data in self.lm.items():
                (out / LM_FOLDER / name).write_bytes(data)

    def card(self) -> str:
        """The model card's paragraph on what was kept."""
        kept = [
            *(["the decoder's adapter"] if self.adapter else []),
            "the second pass's settings (" + ", ".join(f"`{k}` {v}" for k, v in self.settings.items()) + ")",
            *([f"the language model (`{LM_FOLDER}/`)"] if self.lm else []),
        ]
        retune = "`make second-pass-tune` and `make lm-tune` retune the settings for this head"
        return f"\n## Kept from {self.name}\n\n{'; '.join(kept)}: copied unchanged ({retune}).\n"


def run_export(
    checkpoint_path: Path, out: Path, cache_root: Path, log: Path | None = None, carry_from: Path | None = None
) -> Path:
    """Write the bundle of a checkpoint (config with its dev metrics, trained weights in float16, card);
    with ``carry_from``, keep that bundle's decoder adapter, second-pass settings and LM (:class:`Carried`);
    return its folder."""
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
    card = model_card(config, model, checkpoint, metas, has_plot)
    carried = Carried.read(carry_from, config) if carry_from is not None else None
    card += carried.card() if carried is not None else ""
    save_bundle(out, config, model.eval(), card, floats=torch.float16)  # as the base's own weights are stored
    if carried is not None:
        carried.write(out)
    megabytes = (out / WEIGHTS_FILE).stat().st_size / 1e6
    if megabytes > 25:
        raise SystemExit(f"{out / WEIGHTS_FILE} is {megabytes:.1f} MB, over the 25 MB a bundle may hold")
    bundle = load_bundle(out)
    logger.info("exported %s (%s, %.1f MB of trained weights) to %s", bundle.name, config.metrics, megabytes, out)
    return out


# ---------------------------------------------------------------- command line


def run(argv: list[str] | None = None) -> Any:
    """Run ``asr-train-head {cache,train,export} ...``; return what the step returns."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["cache", "train", "export"])
    args, rest = parser.parse_known_args(argv)
    if args.step == "cache":
        sub = argparse.ArgumentParser(prog="asr-train-head cache", description="cache the frozen encoder's states")
        add_flags(sub, CacheConfig)
        return run_cache(CacheConfig(**given(sub.parse_args(rest))))
    if args.step == "train":
        return run_train(parse_head_args(rest))
    sub = argparse.ArgumentParser(prog="asr-train-head export", description="write the bundle of a checkpoint")
    sub.add_argument("--checkpoint", type=Path, default=Path("runs/en-whisper-tiny/best.pt"))
    sub.add_argument("--out", type=Path, default=Path("models/en-whisper-tiny"))
    sub.add_argument("--cache-root", type=Path, default=CACHE_ROOT, help="for the card's data table")
    sub.add_argument("--log", type=Path, default=None, help="training log.jsonl (default: beside the checkpoint)")
    sub.add_argument(
        "--carry-from",
        type=Path,
        default=None,
        help="a bundle whose decoder adapter, second-pass settings and LM to keep",
    )
    ex = sub.parse_args(rest)
    return run_export(ex.checkpoint, ex.out, ex.cache_root, ex.log, ex.carry_from)


def main() -> None:
    """Console entry point of ``asr-train-head``."""
    run()


if __name__ == "__main__":
    main()
