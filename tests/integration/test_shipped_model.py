"""The shipped models transcribe speech they never trained on through POST /transcribe.

The default (``en-whisper-tiny``) on real Common Voice clips and on held-out synthetic speech; the
small from-scratch CTC model (``en-small``) on the synthetic speech. The synthetic voice (espeak-ng's
en-gb-x-gbcwmd accent) and the sentences are not in the training data. Thresholds follow the model
cards' measured accuracy (raise the bar as the models improve).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import jiwer
import numpy as np
import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from app.asr.text import spoken_form
from app.config import Settings
from app.main import create_app
from tests.conftest import wait_ready
from tests.support import cv100_clips, so762_test_clips, wav_bytes

EN_SMALL = Path(__file__).resolve().parents[2] / "models" / "en-small"

SENTENCES = [
    "please open the door for me",
    "my sister lives in a small house",
    "she has three children and a dog",
    "i would like to buy a new book",
    "turn off the radio in the kitchen",
]
# measured 0.40 with the stride-2 model after its second and third runs, 0.43 after its fifth
MAX_WER = 0.55  # (0.75 was set for stride 4)
MAX_WER_DEFAULT_REAL = 0.20  # the default decoder on the first 8 cv100 clips
# the first 12 cv100 clips joined (95 words), cut at pauses: the second pass measured 0.147 (5 words
# deleted), CTC beam search 0.537 (14); cut by length 0.263 (11) and 0.695 (33)
MAX_WER_LONG_RECORDING = 0.20
MAX_WER_LONG_RECORDING_BEAM = 0.60
MAX_WER_DEFAULT_SYNTH = 0.25  # measured 0.17: Whisper mishears this robotic espeak-ng voice ("might be to live")


def test_default_model_transcribes_real_speech() -> None:
    clips = cv100_clips(8)
    with TestClient(create_app(Settings())) as client:
        wait_ready(client, timeout_s=120)
        model = client.get("/v1/models").json()["data"][0]
        assert model["id"] == "en-whisper-tiny" and model["trained"] is True
        hypotheses = []
        for audio, _ in clips:
            response = client.post("/transcribe", files={"file": ("c.wav", wav_bytes(audio), "audio/wav")})
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["words"] and all(0 <= w["start"] < w["end"] <= body["duration"] + 0.02 for w in body["words"])
            hypotheses.append(body["text"])
    references = [spoken_form(text) for _, text in clips]
    wer = jiwer.wer(references, hypotheses)
    assert wer <= MAX_WER_DEFAULT_REAL, list(zip(references, hypotheses, strict=True))


@pytest.mark.parametrize(
    "split,decoder,max_wer,max_deleted",
    [("auto", "beam", MAX_WER_LONG_RECORDING_BEAM, 20), ("pauses", "attention", MAX_WER_LONG_RECORDING, 8)],
)
def test_a_recording_of_many_speakers_cut_at_pauses_keeps_its_sentences(
    split: str, decoder: str, max_wer: float, max_deleted: int
) -> None:
    """Twelve Common Voice clips joined, a new speaker and microphone every few seconds (66 s). Cut
    at the pauses between them (the CTC path's default; ASR_SPLIT=pauses for the second pass), the
    sentences stay; pieces of several speakers lose some (docs/benchmarks.md, "Long recordings")."""
    clips = cv100_clips(12)
    recording = np.concatenate([audio for audio, _ in clips])
    with TestClient(create_app(Settings(split=split))) as client:
        wait_ready(client, timeout_s=120)
        serving = client.get("/v1/models").json()["data"][0]["serving"]
        assert serving["split" if decoder == "beam" else "second_pass_split"] == "pauses"
        response = client.post(
            "/transcribe", files={"file": ("long.wav", wav_bytes(recording), "audio/wav")}, data={"decoder": decoder}
        )
    assert response.status_code == 200, response.text
    body = response.json()
    reference = " ".join(spoken_form(text) for _, text in clips)
    words = jiwer.process_words(reference, body["text"])
    assert words.wer <= max_wer and words.deletions <= max_deleted, (words.wer, words.deletions, body["text"])
    starts = [w["start"] for w in body["words"]]
    assert starts == sorted(starts) and body["words"][-1]["end"] <= body["duration"] + 0.02


def test_a_prompt_teaches_the_default_decoder_a_name() -> None:
    clips = so762_test_clips("jayme")  # read by second-language speakers; Whisper writes "Jamie", "Jimmy"
    assert len(clips) >= 10
    with TestClient(create_app(Settings())) as client:
        wait_ready(client, timeout_s=120)

        def hits(prompt: str | None) -> int:
            params = {"prompt": prompt} if prompt else {}
            texts = [
                client.post("/transcribe", params=params, files={"file": ("c.wav", wav_bytes(audio))}).json()["text"]
                for audio, _ in clips
            ]
            return sum("jayme" in text.split() for text in texts)

        plain, prompted = hits(None), hits("Jayme.")
    assert prompted >= plain + len(clips) // 3, (plain, prompted)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng missing: run scripts/install-tts.sh")
def test_default_model_transcribes_held_out_synthetic_speech(tmp_path: Path) -> None:
    with TestClient(create_app(Settings())) as client:
        wait_ready(client, timeout_s=120)
        hypotheses = []
        for i, sentence in enumerate(SENTENCES):
            wav = tmp_path / f"{i}.wav"
            subprocess.run(["espeak-ng", "-v", "en-gb-x-gbcwmd", "-s", "150", "-w", str(wav), sentence], check=True)
            response = client.post("/transcribe", files={"file": (wav.name, wav.read_bytes(), "audio/wav")})
            hypotheses.append(response.json()["text"])
    wer = jiwer.wer(SENTENCES, hypotheses)
    assert wer <= MAX_WER_DEFAULT_SYNTH, list(zip(SENTENCES, hypotheses, strict=True))


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng missing: run scripts/install-tts.sh")
def test_en_small_transcribes_held_out_speech(tmp_path: Path) -> None:
    settings = Settings(model_path=EN_SMALL, decoder="greedy")
    with TestClient(create_app(settings)) as client:
        wait_ready(client, timeout_s=120)
        model = client.get("/v1/models").json()["data"][0]
        assert model["id"] == "en-small" and model["trained"] is True
        hypotheses = []
        for i, sentence in enumerate(SENTENCES):
            wav = tmp_path / f"{i}.wav"
            subprocess.run(["espeak-ng", "-v", "en-gb-x-gbcwmd", "-s", "150", "-w", str(wav), sentence], check=True)
            response = client.post("/transcribe", files={"file": (wav.name, wav.read_bytes(), "audio/wav")})
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["model"] == "en-small" and body["duration"] > 1.0
            hypotheses.append(body["text"])
    wer = jiwer.wer(SENTENCES, hypotheses)
    assert wer <= MAX_WER, list(zip(SENTENCES, hypotheses, strict=True))


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng missing: run scripts/install-tts.sh")
def test_stream_finals_match_offline_with_the_default_decoder(tmp_path: Path) -> None:
    import json

    import soundfile as sf

    wav = tmp_path / "s.wav"
    subprocess.run(["espeak-ng", "-v", "en-gb-x-gbcwmd", "-s", "150", "-w", str(wav), SENTENCES[0]], check=True)
    audio, rate = sf.read(wav, dtype="int16")
    with TestClient(create_app(Settings())) as client:  # decoder auto: the second pass
        wait_ready(client, timeout_s=120)
        offline = client.post("/transcribe", files={"file": ("s.wav", wav.read_bytes(), "audio/wav")}).json()["text"]
        finals = []
        with client.websocket_connect("/stream") as ws:
            config = {
                "type": "config",
                "sample_rate": rate,
                "encoding": "pcm_s16le",
                "interim_results": False,
                "endpointing": {"silence_ms": 5000, "max_utterance_s": 60},
            }
            ws.send_text(json.dumps(config))
            for start in range(0, audio.shape[0], rate // 5):
                ws.send_bytes(audio[start : start + rate // 5].tobytes())
            ws.send_text('{"type": "eof"}')
            with pytest.raises(WebSocketDisconnect) as closed:  # after eof: finals, then close 1000
                while True:
                    message = json.loads(ws.receive_text())
                    if message["type"] == "final":
                        finals.append(message["text"])
            assert closed.value.code == 1000
    assert " ".join(finals).split() == offline.split()


def test_the_default_bundle_in_git_is_at_most_25_mb() -> None:
    bundle = EN_SMALL.parent / "en-whisper-tiny"
    files = subprocess.run(["git", "ls-files", str(bundle)], capture_output=True, text=True, check=True, cwd=bundle)
    paths = [bundle / line for line in files.stdout.split()]  # relative to cwd
    assert paths and all(path.is_file() for path in paths)
    assert sum(path.stat().st_size for path in paths) <= 25_000_000
