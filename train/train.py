"""Train the CTC acoustic model (``asr-train``): one readable loop.

Configuration is data: :class:`train.config.TrainConfig` holds every knob, it can be read from a
JSON file (``--config``) and any field overridden on the command line. Checkpoints
(:mod:`train.checkpoint`) carry the model's bundle config, the training config and the metrics
history, so ``--resume`` continues exactly where a run stopped and ``train.export`` needs nothing
else. Dev WER is measured through the server's recognizer and decoder (:mod:`train.scoring`).

Examples::

    asr-train --train data/manifests/synth_train.jsonl data/manifests/so762_train.jsonl:3 \\
              --dev data/manifests/synth_dev.jsonl data/manifests/so762_dev.jsonl --out runs/en-small
    asr-train --resume --out runs/en-small                       # continue a stopped run
    asr-train --init models/en-small --train my_domain.jsonl --dev my_dev.jsonl --out runs/my-model \\
              --lr 5e-4 --max-hours 1                           # fine-tune a shipped model
    asr-train --init models/en-small --stride 2 ...             # ... at twice its output frame rate
"""

from __future__ import annotations

import functools
import logging
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from app.asr.bundle import build_model, load_bundle
from app.asr.configs import ENGLISH_CHARS, BundleConfig, default_config
from app.asr.features import LogMelFrontend
from app.asr.model import SepConvCTC
from app.process import tune_malloc
from train.checkpoint import State, keep_checkpoint, load_checkpoint, save_checkpoint
from train.config import TrainConfig, parse_train_args
from train.data.augment import AugmentConfig
from train.data.dataset import BucketBatchSampler, SpeechDataset, Utterance, load_utterances, parse_manifest_arg
from train.data.dataset import worker_init as dataset_worker_init
from train.data.wordpieces import learn_word_pieces
from train.loop import Every, Losses, Record, budget_spent, keep_best
from train.runlog import log_entry
from train.scoring import score, training_recognizer, transcribe

logger = logging.getLogger(__name__)


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
    """Greedy WER per dev set and their mean ('mean'), through the served recognizer of the model."""
    recognizer = training_recognizer(model, config, device)
    result = {}
    for name, utts in dev.items():
        hyps = transcribe(recognizer, [u.audio.astype(np.float32) / 32768.0 for u in utts])
        result[name] = round(score([u.text for u in utts], hyps).wer, 4)
    if result:
        result["mean"] = round(sum(result.values()) / len(result), 4)
    return result


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def ctc_loss(
    model: SepConvCTC, config: BundleConfig, batch: dict[str, torch.Tensor], device: torch.device
) -> torch.Tensor:
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
        blank=config.blank_id,
        reduction="mean",
        zero_infinity=True,
    )


@dataclass
class Trainee:
    """What a run trains and saves: its settings, the model with its bundle config, and the optimizer."""

    cfg: TrainConfig
    config: BundleConfig
    model: SepConvCTC
    optimizer: torch.optim.Optimizer
    device: torch.device

    @property
    def out(self) -> Path:
        return Path(self.cfg.out)

    def step(self, batch: dict[str, torch.Tensor], state: State) -> tuple[float, float]:
        """One optimiser step at the scheduled learning rate; return the loss and the gradient norm."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(state.step + 1, self.cfg, state.train_seconds / 3600)
        loss = ctc_loss(self.model, self.config, batch, self.device)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        return loss.item(), float(grad_norm)

    def save(self, name: str, state: State, metrics: dict[str, float] | None = None) -> None:
        """Write ``OUT/name`` (with ``metrics`` in its bundle config, when given)."""
        config = self.config if metrics is None else self.config.model_copy(update={"metrics": metrics})
        save_checkpoint(self.out / name, self.model.state_dict(), self.optimizer, config, self.cfg, state)

    def evaluate(self, dev: dict[str, list[Utterance]], state: State, record: Record) -> None:
        """Score the dev sets; the lowest mean WER yet is written as ``best.pt``."""
        wer = evaluate_dev(self.model, self.config, dev, self.device)
        keep_best(wer, state, record, lambda best: self.save("best.pt", state, best))

    def checkpoint(self, state: State) -> None:
        """Write ``last.pt`` to resume from (and a kept copy of it, with ``--keep-checkpoints``)."""
        self.save("last.pt", state)
        keep_checkpoint(self.out, state.step, self.cfg.keep_checkpoints)


def start(cfg: TrainConfig, utts: list[Utterance], device: torch.device) -> tuple[Trainee, State]:
    """The model, optimizer and progress: from ``OUT/last.pt`` with ``--resume``, else new (or ``--init``)."""
    resume_path = Path(cfg.out) / "last.pt"
    checkpoint = load_checkpoint(resume_path) if cfg.resume and resume_path.exists() else None
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
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
    return Trainee(cfg, config, model, optimizer, device), state


def run(argv: list[str] | None = None) -> State:
    """Run ``asr-train`` with ``argv``; return the final training state."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = parse_train_args(argv, __doc__ or "")
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    tune_malloc()  # reuse the feature and activation blocks of one batch for the next
    device = pick_device(cfg.device)
    utts, repeats, dev = load_sets(cfg)
    trainee, state = start(cfg, utts, device)
    logger.info(
        "model: %d parameters, %d training utterances (%.2f h, %.2f h per epoch with repeats)",
        trainee.model.num_parameters(),
        len(utts),
        sum(u.seconds for u in utts) / 3600,
        sum(u.seconds * r for u, r in zip(utts, repeats, strict=True)) / 3600,
    )
    augment = AugmentConfig(enabled=cfg.augment).scaled(cfg.augment_strength)
    dataset = SpeechDataset(utts, trainee.config.frontend, trainee.config.tokens, augment, seed=cfg.seed)
    sampler = BucketBatchSampler([u.seconds for u in utts], repeats, cfg.batch_seconds, cfg.seed)
    run_loop(trainee, batches(cfg, dataset, sampler, state), dev, state)
    return state


def batches(
    cfg: TrainConfig, dataset: SpeechDataset, sampler: BucketBatchSampler, state: State
) -> Iterator[dict[str, torch.Tensor]]:
    """Batches epoch after epoch from where ``state`` stands; an epoch fully read moves ``state`` to the next."""
    while True:
        sampler.epoch, sampler.skip = state.epoch, state.batch_in_epoch
        dataset.augment.enabled = cfg.augment and state.epoch >= cfg.augment_from_epoch
        yield from DataLoader(
            dataset,
            sampler=sampler,
            batch_size=None,
            num_workers=cfg.workers,
            worker_init_fn=dataset_worker_init,
            prefetch_factor=4 if cfg.workers else None,
            persistent_workers=False,
        )
        state.next_epoch()


def run_loop(
    trainee: Trainee, data: Iterator[dict[str, torch.Tensor]], dev: dict[str, list[Utterance]], state: State
) -> None:
    """CTC training with periodic dev evaluation and checkpoints, until the budget is spent."""
    cfg = trainee.cfg
    started = time.time() - state.train_seconds
    eval_timer, checkpoint_timer, losses = Every(cfg.eval_minutes), Every(cfg.checkpoint_minutes), Losses()
    with (trainee.out / "log.jsonl").open("a") as log:
        record = functools.partial(log_entry, log, state)
        for batch in data:
            # step: one optimiser step; the clock counts training time over all resumes
            loss, grad_norm = trainee.step(batch, state)
            state.advance(started, time.time())
            losses.add(loss)
            # log: the mean loss since the last entry, every log_steps steps
            if state.step % cfg.log_steps == 0:
                lr = round(lr_at(state.step, cfg, state.train_seconds / 3600), 6)
                batch_size = len(batch["lengths"])
                record("train", loss=losses.take_mean(), lr=lr, grad_norm=round(grad_norm, 3), batch=batch_size)
            # evaluate: the dev sets every eval_minutes; the best mean WER is kept as best.pt
            if dev and eval_timer.due():
                trainee.evaluate(dev, state, record)
                eval_timer.restart()
            # checkpoint: last.pt every checkpoint_minutes, to resume from
            if checkpoint_timer.due():
                trainee.checkpoint(state)
                checkpoint_timer.restart()
            # stop: once max_hours or max_steps is spent
            if budget_spent(cfg, state):
                break
        # end: a last evaluation and checkpoint
        if dev:
            trainee.evaluate(dev, state, record)
        trainee.checkpoint(state)
        record("end", best_dev=state.best_dev)


def main() -> None:
    """Console entry point of ``asr-train``."""
    run()


if __name__ == "__main__":
    main()
