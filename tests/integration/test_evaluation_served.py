"""The recipe's evaluation transcribes as the server does: the same transcripts and WER as POST /transcribe."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.asr.bundle import load_bundle
from app.asr.torch_recognizer import build_recognizer
from app.config import Settings
from app.main import create_app
from tests.conftest import wait_ready
from train import evaluate, scoring
from train.data.audio_io import read_audio, write_flac, write_manifest

MODELS = Path(__file__).resolve().parents[2] / "models"
SENTENCES = ["please open the door for me", "she has three children and a dog", "turn off the radio in the kitchen"]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three espeak-ng sentences and one recording longer than the server's pieces, as 16 kHz FLAC."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (scripts/install-tts.sh installs it)")
    folder = tmp_path_factory.mktemp("served")
    waves = []
    for i, text in enumerate(SENTENCES):
        wav = folder / f"{i}.wav"
        subprocess.run(["espeak-ng", "-v", "en-gb-x-gbcwmd", "-s", "150", "-w", str(wav), text], check=True)
        waves.append(read_audio(wav))  # float32 at 16 kHz
    gap = np.zeros(8000, dtype=np.float32)
    rows = [(w, t) for w, t in zip(waves, SENTENCES, strict=True)]
    long = [np.concatenate([x for w in waves * 4 for x in (w, gap)]), " ".join(SENTENCES * 4)]
    rows.append((long[0], long[1]))
    assert long[0].size / 16000 > scoring.CHUNK_SECONDS  # cut into pieces and stitched
    entries = []
    for i, (audio, text) in enumerate(rows):
        write_flac(folder / f"u{i}.flac", audio)
        entries.append({"audio": f"u{i}.flac", "text": text, "duration": audio.size / 16000, "source": "espeak"})
    write_manifest(folder / "set.jsonl", entries)
    return folder / "set.jsonl"


@pytest.mark.parametrize("name", ["en-small", "en-whisper-tiny"])
def test_evaluation_gives_the_servers_transcripts_and_wer(manifest: Path, tmp_path: Path, name: str) -> None:
    bundle = MODELS / name
    files = sorted(manifest.parent.glob("u*.flac"))
    settings = Settings(model_path=bundle, decoder="greedy", precision="fp32")  # as evaluated (auto: int8 here)
    with TestClient(create_app(settings)) as client:
        wait_ready(client, timeout_s=120)
        served = []
        for path in files:
            response = client.post("/transcribe", files={"file": (path.name, path.read_bytes(), "audio/flac")})
            assert response.status_code == 200, response.text
            served.append(response.json()["text"])
    assert all(served) and len(served[-1].split()) > 20

    recognizer = build_recognizer(load_bundle(bundle), "auto", "cpu", "fp32", 1)
    waves = [read_audio(path) for path in files]  # the 16-bit samples the server decodes
    assert scoring.transcribe(recognizer, waves) == served

    results = evaluate.run(["--model", str(bundle), "--set", f"tiny={manifest}", "--threads", "1"])
    references = [*SENTENCES, " ".join(SENTENCES * 4)]
    assert results["runtimes"]["fp32"]["tiny"]["wer"] == round(scoring.score(references, served).wer, 4)
