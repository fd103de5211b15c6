"""Silero VAD: the sequence model equals the wheel's streaming model, pieces of any size give the
same scores, hysteresis, and endpointing that finds speech in noise where frame energy cannot."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from app.asr import vad
from app.asr.incremental import EnergyGate, speech_gate
from app.asr.resample import resample
from app.asr.vad import CONTEXT, FRAME, SileroGate, SileroVad, VadUnavailable, speech_frames
from bench.endpointing import Clip, build_stream, coloured, speech_extent, stream_finals
from bench.workload import speak, speech_like

RATE = 16000
needs_tts = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng missing: run make tts")


def spoken(text: str, scratch: Path) -> np.ndarray:
    """espeak-ng's ``text`` at 16 kHz, trimmed to its speech."""
    wave, rate = speak(text, "en-us", 160, scratch)
    audio = resample(wave, rate, RATE)
    start, end, _ = speech_extent(audio)
    return audio[start:end]


def streaming_model_probabilities(audio: np.ndarray) -> np.ndarray:
    """Silero's own calling convention: silero_vad.onnx, one 512-sample frame (+64 of context) a call."""
    session = ort.InferenceSession(
        str(vad.model_path().with_name("silero_vad.onnx")), providers=["CPUExecutionProvider"]
    )
    state = np.zeros((2, 1, 128), np.float32)
    context = np.zeros((1, CONTEXT), np.float32)
    out = []
    for start in range(0, audio.shape[0] - FRAME + 1, FRAME):
        x = np.concatenate([context, audio[None, start : start + FRAME]], axis=1)
        prob, state = session.run(None, {"input": x, "state": state, "sr": np.array(RATE, dtype=np.int64)})
        context = x[:, -CONTEXT:]
        out.append(float(prob[0, 0]))
    return np.array(out, np.float32)


def test_sequence_model_scores_equal_the_streaming_model_and_ignore_piece_sizes() -> None:
    rng = np.random.default_rng(1)
    audio = np.concatenate([speech_like(2.0, rng), 0.01 * rng.standard_normal(RATE).astype(np.float32)])
    expected = streaming_model_probabilities(audio)
    whole = SileroVad().probabilities(audio)
    pieces = SileroVad()
    cuts = [0, 100, 612, 613, 5000, 20000, audio.shape[0]]
    joined = np.concatenate([pieces.probabilities(audio[a:b]) for a, b in itertools.pairwise(cuts)])
    assert whole.shape == expected.shape == (audio.shape[0] // FRAME,)
    np.testing.assert_allclose(whole, expected, atol=1e-5)
    np.testing.assert_allclose(joined, expected, atol=1e-5)
    assert expected.max() > 0.5 > expected[-10:].max()  # the buzz is speech-like, the hiss is not


def test_hysteresis_starts_at_the_threshold_and_ends_below_it_less_0_15() -> None:
    probs = np.array([0.1, 0.5, 0.4, 0.36, 0.34, 0.6, 0.2])
    speech, speaking = speech_frames(probs, 0.5)
    assert speech.tolist() == [False, True, True, True, False, True, False] and not speaking
    speech, speaking = speech_frames(np.array([0.4]), 0.5, speaking=True)
    assert speech.tolist() == [True] and speaking


def test_gate_rejects_other_rates_and_a_missing_model(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="16000 Hz"):
        SileroGate(8000)
    with pytest.raises(ValueError, match="threshold"):
        SileroGate(RATE, threshold=1.5)
    assert isinstance(speech_gate("energy", RATE, -45.0, 0.5), EnergyGate)
    monkeypatch.setattr(vad.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(VadUnavailable, match="ASR_STREAM_VAD=energy"):
        vad.model_path()


@needs_tts
def test_silero_gate_hears_speech_and_not_loud_noise(tmp_path: Path) -> None:
    speech = spoken("The birch canoe slid on the smooth planks.", tmp_path)
    gate = SileroGate(RATE)
    gate.feed(np.concatenate([np.zeros(RATE // 2, np.float32), speech, np.zeros(RATE, np.float32)]))
    assert gate.heard_speech
    assert abs(gate.trailing_silence - RATE) <= 0.4 * RATE  # the 1 s of silence after it, within 0.4 s
    noise = (0.03 * coloured("pink", 3 * RATE, np.random.default_rng(0))).astype(np.float32)  # -30 dBFS
    silero, energy = SileroGate(RATE), EnergyGate(RATE, -45.0)
    silero.feed(noise)
    energy.feed(noise)
    assert energy.heard_speech and not silero.heard_speech
    assert silero.trailing_silence == noise.shape[0] // FRAME * FRAME


@needs_tts
def test_stream_finals_at_pauses_in_noise_with_silero_and_none_with_energy(tmp_path: Path) -> None:
    """Through a real StreamSession: speech, a pause, speech, in pink noise 10 dB below the speech."""
    clips = [spoken(text, tmp_path) for text in ("Rice is often served in round bowls.", "Read verse out loud.")]
    rng = np.random.default_rng(0)
    stream = build_stream([Clip(c, "espeak") for c in clips], rng, lead_s=2.0, tail_s=2.0)
    level = 10 ** ((-26.0 - 10) / 20)
    audio = (stream.audio + level * coloured("pink", stream.audio.shape[0], rng)).astype(np.float32)
    ends = [e for _, e in stream.spans]
    finals = stream_finals(audio, "silero")
    assert len(finals) == 2
    for final, end in zip(finals, ends, strict=True):
        assert end + 0.6 <= final <= end + 1.1
    assert stream_finals(audio, "energy") == []  # the noise, at -36 dBFS, is never silence
