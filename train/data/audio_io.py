"""Reading and writing training audio: 16 kHz mono int16, FLAC on disk."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from app.asr.audio import decode_audio
from app.asr.resample import resample

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000


def to_rate(audio: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32 audio resampled from ``rate`` to ``target`` (channels, if any, averaged)."""
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    return resample(audio.astype(np.float32), rate, target)


def read_audio(path: Path | str, target: int = SAMPLE_RATE) -> np.ndarray:
    """Read an audio file as mono float32 at ``target`` Hz, decoded exactly as the server decodes an
    upload of it (:func:`app.asr.audio.decode_audio`); raises an ``AudioError`` if it cannot."""
    return decode_audio(Path(path).read_bytes(), target)


def write_flac(path: Path, audio: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    """Write float audio as 16-bit FLAC, clipping to [-1, 1]."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(audio, -1.0, 1.0), rate, format="FLAC", subtype="PCM_16")


def flac_bytes(audio: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    """Encode audio to in-memory FLAC bytes."""
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(audio, -1.0, 1.0), rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def read_manifest(path: Path | str) -> list[dict[str, Any]]:
    """Rows of a JSONL manifest; relative audio paths are resolved against the manifest's folder."""
    path = Path(path)
    rows = []
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if "audio" not in row or "text" not in row:
            raise ValueError(f"{path}:{line_no}: a manifest row needs 'audio' and 'text'")
        audio = Path(row["audio"])
        if not audio.is_absolute():
            candidate = path.parent / audio
            row["audio"] = str(candidate if candidate.exists() or not audio.exists() else audio)
        rows.append(row)
    return rows


def write_manifest(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write rows as JSONL (one object per line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def iter_manifest(paths: list[Path]) -> Iterator[dict[str, Any]]:
    """Rows of several manifests in order."""
    for path in paths:
        yield from read_manifest(path)
