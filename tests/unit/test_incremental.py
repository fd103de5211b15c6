"""Windowed inference for streams: committed frames equal offline frames; PCM and energy helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.asr.bundle import load_bundle
from app.asr.configs import BlockConfig, ModelConfig
from app.asr.incremental import EnergyGate, FrameGrid, PcmStream, Utterance
from app.asr.torch_recognizer import TorchRecognizer
from tests.support import make_random_bundle


@pytest.fixture(scope="module")
def recognizer(tmp_path_factory: pytest.TempPathFactory) -> TorchRecognizer:
    path = make_random_bundle(tmp_path_factory.mktemp("model") / "tiny")
    return TorchRecognizer(load_bundle(Path(path)), device="cpu", precision="fp32")


def test_receptive_field_sums_paddings_scaled_by_earlier_strides() -> None:
    blocks = [
        BlockConfig(channels=8, kernel=11, stride=2, residual=False),
        BlockConfig(channels=8, kernel=13, repeat=3, stride=2),
        BlockConfig(channels=8, kernel=29, dilation=2, residual=False),
        BlockConfig(channels=8, kernel=1, residual=False),
    ]
    config = ModelConfig(n_mels=80, blocks=blocks, vocab_size=29)
    # 11 at scale 1; 13 at scale 1 (its stride applies after it), then 13 twice at scale 4;
    # 29 dilated 2 at scale 4.
    assert config.receptive_field == 5 + 6 * 2 + 6 * 4 * 2 + 28 * 4


def stream_through(recognizer: TorchRecognizer, audio: np.ndarray, pieces: list[int]) -> tuple[np.ndarray, list[int]]:
    """Feed ``audio`` in pieces of these sizes, running a window after each; then the final window."""
    utt = Utterance(FrameGrid.for_model(recognizer.config))
    windows = []
    position = 0
    for size in pieces:
        utt.append(audio[position : position + size])
        position += size
        window = utt.window()
        windows.append(int(window.audio.shape[0]))
        utt.accept(window, recognizer.infer([window.audio])[0])
    utt.append(audio[position:])
    final = utt.window(final=True)
    utt.accept(final, recognizer.infer([final.audio])[0])
    return utt.log_probs(len(recognizer.config.tokens)), windows


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_windowed_log_probs_equal_offline(recognizer: TorchRecognizer, seed: int) -> None:
    rng = np.random.default_rng(seed)
    audio = (0.1 * rng.standard_normal(int(16000 * 6.3))).astype(np.float32)
    pieces = list(rng.integers(300, 9000, size=40))
    pieces = pieces[: int(np.searchsorted(np.cumsum(pieces), audio.shape[0] - 1000))]
    offline = recognizer.infer([audio])[0]
    streamed, windows = stream_through(recognizer, audio, pieces)
    assert streamed.shape == offline.shape
    np.testing.assert_allclose(streamed, offline, atol=1e-4)
    # Work per window stays bounded by the context plus the new audio, not the utterance so far.
    grid = FrameGrid.for_model(recognizer.config)
    context = grid.left_frames * grid.frame_samples + grid.radius * grid.hop + grid.n_fft + grid.frame_samples
    assert max(windows) <= context + 2 * max(pieces)
    assert max(windows) < audio.shape[0] / 2


def test_frames_commit_before_the_end(recognizer: TorchRecognizer) -> None:
    grid = FrameGrid.for_model(recognizer.config)
    utt = Utterance(grid)
    utt.append(np.zeros(16000 * 3, np.float32))
    window = utt.window()
    provisional = utt.accept(window, recognizer.infer([window.audio])[0])
    assert utt.committed_frames == grid.stable_frames(16000 * 3) > 0
    assert utt.committed_frames + provisional.shape[0] == 75  # 3 s at 25 frames per second
    assert utt.window().audio.shape[0] < 16000 * 3  # the next window leaves out audio before its left context
    assert utt.audio.shape[0] == 16000 * 3  # kept for the final pass


def test_a_cut_utterance_equals_offline_of_its_part(recognizer: TorchRecognizer) -> None:
    audio = (0.1 * np.random.default_rng(5).standard_normal(16000 * 4)).astype(np.float32)
    grid = FrameGrid.for_model(recognizer.config)
    utt = Utterance(grid)
    utt.append(audio)
    window = utt.window()
    utt.accept(window, recognizer.infer([window.audio])[0])
    before = utt.committed_frames
    cut = before * grid.frame_samples + 1234
    with pytest.raises(ValueError, match="committed"):
        utt.split(before * grid.frame_samples - 1)
    rest = utt.split(cut)
    final = utt.window(final=True)
    utt.accept(final, recognizer.infer([final.audio])[0])
    assert rest.shape[0] == audio.shape[0] - cut
    offline = recognizer.infer([audio[:cut]])[0]
    committed = utt.log_probs(offline.shape[1])
    assert committed.shape == offline.shape
    # Frames committed before the cut within reach of it saw the audio after it; all others
    # equal offline transcription of the part.
    reach = grid.left_frames + 1
    np.testing.assert_allclose(committed[before:], offline[before:], atol=1e-4)
    np.testing.assert_allclose(committed[: before - reach], offline[: before - reach], atol=1e-4)


def test_pcm_stream_joins_pieces_split_inside_samples() -> None:
    wave = np.sin(np.arange(16000) / 16000 * 2 * np.pi * 440).astype(np.float32) * 0.5
    data = (wave * 32767).astype("<i2").tobytes()
    pcm = PcmStream("pcm_s16le", 16000, 16000)
    out = np.concatenate([pcm.decode(data[i : i + 333]) for i in range(0, len(data), 333)])
    np.testing.assert_allclose(out, wave, atol=1e-4)
    f32 = PcmStream("pcm_f32le", 16000, 16000)
    np.testing.assert_array_equal(f32.decode(wave.astype("<f4").tobytes()), wave)
    with pytest.raises(ValueError, match="unsupported encoding"):
        PcmStream("mulaw", 8000, 16000)


def test_pcm_stream_resamples_across_pieces() -> None:
    rate = 44100
    wave = (0.5 * np.sin(np.arange(rate) / rate * 2 * np.pi * 440)).astype(np.float32)
    pcm = PcmStream("pcm_f32le", rate, 16000)
    data = wave.astype("<f4").tobytes()
    out = np.concatenate([*(pcm.decode(data[i : i + 4000]) for i in range(0, len(data), 4000)), pcm.flush()])
    assert abs(out.shape[0] - 16000) <= 32
    expected = 0.5 * np.sin(np.arange(out.shape[0]) / 16000 * 2 * np.pi * 440)
    # Away from the edges the joined output is the same sine, with no clicks where pieces meet.
    lag = int(np.argmax([np.dot(out[1000:15000], np.roll(expected, s)[1000:15000]) for s in range(0, 40)]))
    assert np.abs(out[1000:15000] - np.roll(expected, lag)[1000:15000]).max() < 0.02


def test_energy_gate_tracks_speech_and_trailing_silence() -> None:
    gate = EnergyGate(16000, threshold_db=-45)
    gate.feed(np.zeros(16000, np.float32))
    assert not gate.heard_speech and gate.trailing_silence == 16000
    gate.feed(np.full(3200, 0.3, np.float32))
    assert gate.heard_speech and gate.trailing_silence == 0
    gate.feed(np.concatenate([np.zeros(4800, np.float32), np.full(50, 0.3, np.float32)]))
    assert gate.trailing_silence == 4800  # the unfinished 20 ms frame is not judged yet
    gate.feed(np.zeros(270, np.float32))
    assert gate.trailing_silence == 0


def test_utterance_audio_views_survive_appends_and_splits() -> None:
    grid = FrameGrid(hop=160, n_fft=400, stride=4, radius=8)
    utt = Utterance(grid)
    first = np.arange(1000, dtype=np.float32)
    utt.append(first)
    before = utt.audio
    for _ in range(5):
        utt.append(np.ones(3000, np.float32))
    np.testing.assert_array_equal(before, first)  # growing copied, the old view is untouched
    assert utt.samples == 16000 and utt.audio.shape == (16000,)
    whole = utt.audio
    rest = utt.split(6000)
    utt.append(np.full(500, 7.0, np.float32))
    np.testing.assert_array_equal(whole[6000:7000], 1.0)  # the split-off audio was not overwritten
    assert rest.shape == (10000,) and utt.samples == 6500 and utt.audio[-1] == 7.0
