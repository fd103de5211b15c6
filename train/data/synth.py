"""Parallel speech synthesis of sentence lists into 16 kHz FLAC files and JSONL manifests."""

from __future__ import annotations

import logging
import os
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import soundfile as sf
import torch

from train.data.audio_io import SAMPLE_RATE, to_rate, write_flac, write_manifest
from train.data.voices import Voice, synthesize_festival, synthesize_simple

logger = logging.getLogger(__name__)

CHUNK = 40


@dataclass(frozen=True)
class Job:
    """One utterance to synthesise."""

    utt_id: str
    text: str
    voice: Voice


def plan_jobs(prefix: str, sentences: list[str], pick_voice: Callable[[random.Random], Voice], seed: int) -> list[Job]:
    """Assign a voice to every sentence, reproducibly."""
    rng = random.Random(seed)
    return [Job(f"{prefix}-{i:06d}", text, pick_voice(rng)) for i, text in enumerate(sentences)]


def _chunks(jobs: list[Job]) -> list[list[Job]]:
    """Group jobs by voice (festival needs one process per voice) into chunks of CHUNK."""
    by_voice: dict[Voice, list[Job]] = {}
    for job in jobs:
        key = job.voice if job.voice.engine == "festival" else Voice(job.voice.engine, "any")
        by_voice.setdefault(key, []).append(job)
    chunks: list[list[Job]] = []
    for group in by_voice.values():
        chunks.extend(group[i : i + CHUNK] for i in range(0, len(group), CHUNK))
    return chunks


def _run_chunk(args: tuple[list[Job], str]) -> list[dict[str, Any]]:
    jobs, out_dir = args
    out = Path(out_dir)
    done = {job.utt_id: row for job in jobs if (row := _existing(job, out)) is not None}
    jobs = [job for job in jobs if job.utt_id not in done]
    rows = list(done.values())
    if not jobs:
        return rows
    with tempfile.TemporaryDirectory() as tmp:
        wavs = [Path(tmp) / f"{job.utt_id}.wav" for job in jobs]
        if jobs[0].voice.engine == "festival":
            synthesize_festival(jobs[0].voice, [(job.text, wav) for job, wav in zip(jobs, wavs, strict=True)])
        else:
            for job, wav in zip(jobs, wavs, strict=True):
                synthesize_simple(job.voice, job.text, wav)
        for job, wav in zip(jobs, wavs, strict=True):
            row = _store(job, wav, out)
            if row is not None:
                rows.append(row)
    return rows


def _row(job: Job, rel: Path, samples: int) -> dict[str, Any]:
    return {
        "audio": str(rel),
        "text": job.text,
        "duration": round(samples / SAMPLE_RATE, 3),
        "source": job.voice.source,
        "id": job.utt_id,
    }


def _existing(job: Job, out: Path) -> dict[str, Any] | None:
    """The manifest row of an utterance a previous (interrupted) run already wrote, if it is readable."""
    rel = Path(job.voice.engine) / f"{job.utt_id}.flac"
    try:
        info = sf.info(str(out / rel))
    except (sf.LibsndfileError, RuntimeError):
        return None
    return _row(job, rel, info.frames) if info.frames > 0 else None


def _worker_init() -> None:
    torch.set_num_threads(1)


def _store(job: Job, wav: Path, out: Path) -> dict[str, Any] | None:
    if not wav.exists():
        logger.warning("no audio for %s (%s)", job.utt_id, job.voice.source)
        return None
    audio, rate = sf.read(str(wav), dtype="float32")
    audio = to_rate(audio, rate, SAMPLE_RATE)
    peak = float(abs(audio).max()) if audio.size else 0.0
    if peak < 1e-3:
        return None
    audio = audio * (0.5 / peak)
    rel = Path(job.voice.engine) / f"{job.utt_id}.flac"
    tmp = out / rel.with_suffix(".tmp.flac")
    write_flac(tmp, audio)
    tmp.replace(out / rel)
    return _row(job, rel, len(audio))


def synthesize(jobs: list[Job], out_dir: Path, manifest: Path, workers: int = 2) -> list[dict[str, Any]]:
    """Synthesise ``jobs`` under ``out_dir`` with ``workers`` processes; write ``manifest`` (paths relative to it)."""
    chunks = _chunks(jobs)
    rows: list[dict[str, Any]] = []
    with get_context("fork").Pool(workers, initializer=_worker_init, maxtasksperchild=50) as pool:
        for i, chunk_rows in enumerate(pool.imap_unordered(_run_chunk, [(c, str(out_dir)) for c in chunks])):
            rows.extend(chunk_rows)
            if (i + 1) % 20 == 0:
                logger.info("synthesised %d/%d chunks", i + 1, len(chunks))
    rows.sort(key=lambda r: r["id"])
    rel_root = Path(_relative(out_dir, manifest.parent))
    for row in rows:
        row["audio"] = str(rel_root / row["audio"])
    write_manifest(manifest, rows)
    hours = sum(r["duration"] for r in rows) / 3600
    logger.info("%s: %d utterances, %.2f hours", manifest, len(rows), hours)
    return rows


def _relative(path: Path, start: Path) -> str:
    return os.path.relpath(path.resolve(), start.resolve())
