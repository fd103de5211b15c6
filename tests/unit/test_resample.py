"""The audio front door: one resampler and one PCM decoder, so a stream and an upload of the same
audio give the model the same samples at every input rate."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest
import soundfile as sf

from app.asr import audio
from app.asr.incremental import PcmStream
from app.asr.resample import Resampler, resample

RATES = [16000, 22050, 44100, 48000]


def _speechlike(rate: int, seconds: float = 1.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(rate)
    wave = 0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 3 * t) + 0.02 * rng.standard_normal(t.size)
    return wave.astype(np.float32)


def _pieces(data: bytes, sizes: tuple[int, ...]) -> list[bytes]:
    """``data`` cut into pieces of the given sizes in turn (odd sizes end inside samples)."""
    out, start, i = [], 0, 0
    while start < len(data):
        out.append(data[start : start + sizes[i % len(sizes)]])
        start += sizes[i % len(sizes)]
        i += 1
    return out


def _stream(data: bytes, encoding: str, rate: int, channels: int = 1) -> np.ndarray:
    pcm = PcmStream(encoding, rate, 16000, channels)
    return np.concatenate([*(pcm.decode(p) for p in _pieces(data, (1, 333, 4000, 7, 2048))), pcm.flush()])


def _file(wave: np.ndarray, rate: int, fmt: str, subtype: str) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


@pytest.mark.parametrize("rate", RATES)
def test_a_stream_in_small_pieces_equals_the_upload_of_the_same_audio(rate: int) -> None:
    pcm16 = (_speechlike(rate) * 32767).astype("<i2")
    streamed = _stream(pcm16.tobytes(), "pcm_s16le", rate)
    assert abs(streamed.shape[0] - pcm16.shape[0] * 16000 / rate) <= 2
    wave = pcm16.astype(np.float32) / 32768
    uploads = {
        "raw PCM": audio.decode_pcm(pcm16.tobytes(), audio.PcmFormat(rate, "s16le"), 16000),
        "PCM WAV": audio.decode_audio(_file(wave, rate, "WAV", "PCM_16"), 16000),  # read from its header
        "FLAC": audio.decode_audio(_file(wave, rate, "FLAC", "PCM_16"), 16000),  # libsndfile
        "AIFF": audio.decode_audio(_file(wave, rate, "AIFF", "PCM_16"), 16000),  # PyAV
    }
    for name, upload in uploads.items():
        assert upload.shape == streamed.shape, name
        np.testing.assert_allclose(upload, streamed, atol=1e-6, err_msg=name)
    np.testing.assert_array_equal(uploads["raw PCM"], streamed)


@pytest.mark.parametrize("rate", RATES)
def test_float_and_multichannel_streams_equal_their_uploads(rate: int) -> None:
    stereo = np.stack([_speechlike(rate), 0.5 * _speechlike(rate)[::-1]], axis=1)
    data = stereo.astype("<f4").tobytes()
    upload = audio.decode_pcm(data, audio.PcmFormat(rate, "f32le", 2), 16000)
    np.testing.assert_array_equal(_stream(data, "pcm_f32le", rate, channels=2), upload)
    np.testing.assert_array_equal(upload, resample(stereo.mean(axis=1, dtype=np.float32), rate, 16000))


@pytest.mark.parametrize("source,target", [(44100, 16000), (8000, 16000), (16000, 24000), (48000, 16000)])
def test_the_resampler_fed_in_blocks_equals_one_shot(source: int, target: int) -> None:
    wave = _speechlike(source, seconds=2.0)
    resampler = Resampler(source, target)
    cuts = np.cumsum(np.random.default_rng(0).integers(1, 3000, 60))  # blocks of 1 to 3000 samples
    blocks = [resampler.push(block) for block in np.split(wave, cuts)]
    np.testing.assert_array_equal(np.concatenate([*blocks, resampler.flush()]), resample(wave, source, target))
    assert abs(resample(wave, source, target).shape[0] - wave.shape[0] * target / source) <= 2


def test_equal_rates_pass_samples_through_and_bad_input_is_refused() -> None:
    wave = _speechlike(16000)
    np.testing.assert_array_equal(resample(wave, 16000, 16000), wave)
    with pytest.raises(ValueError, match="mono"):
        Resampler(44100, 16000).push(np.zeros((10, 2), np.float32))
    with pytest.raises(ValueError, match="positive"):
        Resampler(0, 16000)
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 100), np.float32), format="flt", layout="mono")
    frame.sample_rate = 8000
    with pytest.raises(ValueError, match="8000 Hz"):
        Resampler(44100, 16000).push_frame(frame)
    with pytest.raises(ValueError, match="channel"):
        PcmStream("pcm_s16le", 16000, 16000, channels=0)


def test_decoded_frames_are_averaged_over_their_channels() -> None:
    planes = (np.stack([_speechlike(44100), 0.25 * _speechlike(44100)]) * 32767).astype(np.int16)
    frame = av.AudioFrame.from_ndarray(planes, format="s16p", layout="stereo")
    frame.sample_rate = 44100
    resampler = Resampler(44100, 16000)
    got = np.concatenate([resampler.push_frame(frame), resampler.flush()])
    expected = resample(planes.astype(np.float32).mean(axis=0) / 32768, 44100, 16000)
    np.testing.assert_allclose(got, expected, atol=1e-5)
