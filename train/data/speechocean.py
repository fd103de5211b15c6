"""Manifests for speechocean762 (Kaldi-style lists of 16 kHz Ogg/Opus read speech).

The corpus is read in place from the folder given on the command line; its audio is never copied.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import soundfile as sf

from app.asr.text import normalize_text

logger = logging.getLogger(__name__)


def _read_list(path: Path) -> dict[str, str]:
    """A Kaldi list file: first field is the key, the rest of the line the value."""
    table = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            key, _, value = line.strip().partition(" ") if "\t" not in line else line.strip().partition("\t")
            table[key] = value.strip()
    return table


def split_rows(root: Path, split: str) -> list[dict[str, Any]]:
    """Manifest rows for ``root/split`` (absolute audio paths, normalised text, speaker)."""
    folder = root / split
    texts = _read_list(folder / "text")
    audio = _read_list(folder / "audio.scp")
    speakers = _read_list(folder / "utt2spk")
    rows = []
    for utt in sorted(texts):
        if utt not in audio:
            logger.warning("speechocean762 %s: %s has no audio entry", split, utt)
            continue
        path = (root / audio[utt]).resolve()
        duration = sf.info(str(path)).duration
        rows.append(
            {
                "audio": str(path),
                "text": normalize_text(texts[utt]),
                "duration": round(duration, 3),
                "source": f"speechocean762:{speakers.get(utt, 'unknown')}",
                "id": utt,
            }
        )
    return rows


def speechocean_manifests(root: Path, dev_speakers: int, seed: int) -> dict[str, list[dict[str, Any]]]:
    """Rows for 'train', 'dev' (``dev_speakers`` speakers held out of train/) and 'test' (test/)."""
    if not (root / "train" / "text").is_file():
        raise FileNotFoundError(f"{root} does not look like speechocean762 (no train/text)")
    train = split_rows(root, "train")
    speakers = sorted({r["source"] for r in train})
    held = set(random.Random(seed).sample(speakers, dev_speakers))
    result = {
        "train": [r for r in train if r["source"] not in held],
        "dev": [r for r in train if r["source"] in held],
        "test": split_rows(root, "test"),
    }
    for name, rows in result.items():
        logger.info(
            "speechocean762 %s: %d utterances, %.2f hours", name, len(rows), sum(r["duration"] for r in rows) / 3600
        )
    return result
