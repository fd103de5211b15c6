"""The slim install's server: the default model served with PyTorch unimportable (as without the
``torch`` extra) gives the same transcripts, words and times as the PyTorch path, over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.e2e.server import ROOT, running_server
from tests.support import cv100_clips, wav_bytes

DEFAULT = ROOT / "models" / "en-whisper-tiny"
WITHOUT_TORCH = Path(__file__).resolve().parent / "without_torch"


def transcripts(base_url: str, clips: list[bytes], **params: str) -> list[dict[str, Any]]:
    answers = []
    for n, clip in enumerate(clips):
        response = httpx.post(
            f"{base_url}/transcribe",
            files={"file": (f"{n}.wav", clip, "audio/wav")},
            data={"word_timestamps": "true", **params},
            timeout=120,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        answers.append(body)
    return answers


def same(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> None:
    """The same texts and word times; confidences (means of probabilities) within float rounding."""
    for one, other in zip(ours, theirs, strict=True):
        assert one["text"] == other["text"]
        assert [(w["word"], w["start"], w["end"]) for w in one["words"]] == [
            (w["word"], w["start"], w["end"]) for w in other["words"]
        ]
        for w, v in zip(one["words"], other["words"], strict=True):
            assert abs(w["confidence"] - v["confidence"]) <= 2e-3


DECODERS = ("attention", "greedy", "beam")


def test_the_slim_server_transcribes_as_the_torch_path(tmp_path: Path) -> None:
    clips = [wav_bytes(audio) for audio, _ in cv100_clips(3)]
    exact = {"ASR_PRECISION": "fp32", "ASR_SECOND_PASS_PRECISION": "fp32"}  # the same maths (auto: int8)
    with running_server(DEFAULT, tmp_path, PYTHONPATH=str(WITHOUT_TORCH), ASR_NUM_THREADS="1", **exact) as slim:
        serving = httpx.get(f"{slim.base_url}/v1/models", timeout=10).json()["data"][0]["serving"]
        assert (serving["runtime"], serving["precision"]) == ("onnx", "fp32")
        ours = {decoder: transcripts(slim.base_url, clips, decoder=decoder) for decoder in DECODERS}
    with running_server(DEFAULT, tmp_path, ASR_RUNTIME="torch", ASR_NUM_THREADS="1") as torch_path:
        theirs = {decoder: transcripts(torch_path.base_url, clips, decoder=decoder) for decoder in DECODERS}
    for decoder in DECODERS:
        same(ours[decoder], theirs[decoder])
        assert all(answer["text"] for answer in ours[decoder])
