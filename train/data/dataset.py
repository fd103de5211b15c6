"""Training data in memory: utterances, length-bucketed batches with a curriculum, and collation
(augmentation, log-mel features, SpecAugment) in a DataLoader worker."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from app.asr.configs import FrontendConfig
from app.asr.ctc import text_to_ids
from app.asr.features import LogMelFrontend
from app.asr.text import normalize_text
from train.data.audio_io import SAMPLE_RATE, read_audio, read_manifest
from train.data.augment import AugmentConfig, augment_waveform, spec_augment

logger = logging.getLogger(__name__)


@dataclass
class Utterance:
    """One training example held in memory as 16-bit audio."""

    audio: np.ndarray  # (samples,) int16
    text: str
    source: str

    @property
    def seconds(self) -> float:
        return self.audio.size / SAMPLE_RATE


def parse_manifest_arg(arg: str) -> tuple[Path, int]:
    """'path.jsonl' or 'path.jsonl:3' (repeat the manifest 3 times per epoch)."""
    path, _, repeat = arg.rpartition(":") if arg.rsplit(":", 1)[-1].isdigit() else (arg, "", "1")
    return Path(path), int(repeat)


def load_utterances(manifest: Path, max_seconds: float = 20.0, threads: int = 2) -> list[Utterance]:
    """Read every utterance of a manifest into memory (int16), skipping empty or overlong ones."""
    rows = read_manifest(manifest)

    def load(row: dict) -> Utterance | None:
        text = normalize_text(row["text"])
        audio = read_audio(row["audio"])
        if not text or audio.size == 0 or audio.size > max_seconds * SAMPLE_RATE:
            return None
        pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)
        return Utterance(pcm, text, str(row.get("source", manifest.stem)))

    with ThreadPoolExecutor(threads) as pool:
        utts = [u for u in pool.map(load, rows) if u is not None]
    logger.info(
        "%s: %d of %d utterances, %.2f hours", manifest, len(utts), len(rows), sum(u.seconds for u in utts) / 3600
    )
    return utts


class SpeechDataset(Dataset):
    """Indexable utterances; a batch is built by :meth:`collate` from a list of indices."""

    def __init__(
        self,
        utterances: list[Utterance],
        frontend: FrontendConfig,
        tokens: list[str],
        augment: AugmentConfig,
        seed: int = 0,
    ) -> None:
        self.utterances = utterances
        self.frontend_config = frontend
        self.tokens = tokens
        self.augment = augment
        self.seed = seed
        self._frontend: LogMelFrontend | None = None
        self._rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, indices: list[int]) -> dict[str, Tensor]:
        return self.collate(indices)

    def _waveform(self, index: int) -> np.ndarray:
        audio = self.utterances[index].audio.astype(np.float32) / 32768.0
        return augment_waveform(audio, self.augment, self._rng, self._babble)

    def _babble(self) -> np.ndarray:
        return self.utterances[self._rng.randrange(len(self.utterances))].audio.astype(np.float32) / 32768.0

    def collate(self, indices: list[int]) -> dict[str, Tensor]:
        """Features (batch, n_mels, frames), frame lengths, padded targets and target lengths."""
        if self._frontend is None:
            self._frontend = LogMelFrontend(self.frontend_config)
        waves = [self._waveform(i) for i in indices]
        lengths = torch.tensor([w.size for w in waves])
        batch = torch.zeros(len(waves), int(lengths.max()))
        for row, wave in enumerate(waves):
            batch[row, : wave.size] = torch.from_numpy(wave)
        with torch.no_grad():
            feats, frame_lengths = self._frontend(batch, lengths)
        for row in range(len(waves)):
            spec_augment(feats[row], int(frame_lengths[row]), self.augment, self._rng)
        ids = [text_to_ids(self.utterances[i].text, self.tokens) for i in indices]
        targets = torch.zeros(len(ids), max(len(t) for t in ids), dtype=torch.long)
        for row, t in enumerate(ids):
            targets[row, : len(t)] = torch.tensor(t)
        return {
            "features": feats,
            "lengths": frame_lengths,
            "targets": targets,
            "target_lengths": torch.tensor([len(t) for t in ids]),
        }


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of about ``batch_seconds`` of audio.

    Epoch 0 is a curriculum: batches in order of increasing duration. Later epochs shuffle,
    sort within pools of ~50 batches (little padding) and shuffle the batches. ``repeats`` lists
    how many times each index appears per epoch (to oversample a corpus).
    """

    def __init__(
        self, seconds: list[float], repeats: list[int], batch_seconds: float, seed: int, max_batch: int = 128
    ) -> None:
        self.seconds = seconds
        self.repeats = repeats
        self.batch_seconds = batch_seconds
        self.max_batch = max_batch
        self.seed = seed
        self.epoch = 0
        self.skip = 0

    def batches(self, epoch: int) -> list[list[int]]:
        """All batches of ``epoch`` (deterministic in seed and epoch)."""
        rng = random.Random(self.seed * 1000 + epoch)
        order = [i for i, r in enumerate(self.repeats) for _ in range(r)]
        rng.shuffle(order)
        if epoch == 0:
            return self._pack(sorted(order, key=lambda i: self.seconds[i]))
        pool = max(1, int(50 * self.batch_seconds / (sum(self.seconds) / len(self.seconds))))
        batches: list[list[int]] = []
        for start in range(0, len(order), pool):
            batches += self._pack(sorted(order[start : start + pool], key=lambda i: self.seconds[i]))
        rng.shuffle(batches)
        return batches

    def _pack(self, order: list[int]) -> list[list[int]]:
        batches: list[list[int]] = []
        current: list[int] = []
        longest = 0.0
        for i in order:
            longest_next = max(longest, self.seconds[i])
            if current and (longest_next * (len(current) + 1) > self.batch_seconds or len(current) >= self.max_batch):
                batches.append(current)
                current, longest_next = [], self.seconds[i]
            current.append(i)
            longest = longest_next
        if current:
            batches.append(current)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.batches(self.epoch)
        yield from batches[self.skip :]

    def __len__(self) -> int:
        return max(0, len(self.batches(self.epoch)) - self.skip)


def steps_per_epoch(seconds: list[float], repeats: list[int], batch_seconds: float) -> int:
    """Rough number of batches per epoch, for logging."""
    total = sum(s * r for s, r in zip(seconds, repeats, strict=True))
    return math.ceil(total / batch_seconds)


def worker_init(_: int) -> None:
    """DataLoader worker setup: one thread each, so workers do not fight the training threads."""
    torch.set_num_threads(1)
    info = torch.utils.data.get_worker_info()
    if info is not None:
        dataset = info.dataset
        if isinstance(dataset, SpeechDataset):
            dataset._rng = random.Random(info.seed)
