"""Audio decoding: formats, downmix, resampling, raw PCM, and the typed errors."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import soundfile as sf

from app.asr import audio
from app.asr.segment import split_points
from app.asr.text import normalize_text
from tests.support import FORMATS, encode, tone, wav_bytes


@pytest.mark.parametrize("fmt", [*FORMATS, "ogg_vorbis"])
def test_decodes_to_mono_16k_with_level_kept(fmt: str) -> None:
    samples = audio.decode_audio(encode(fmt, seconds=1.0, channels=2), 16000)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(samples.shape[0] - 16000) < 1200  # codec priming/padding
    assert 0.25 < np.abs(samples).max() < 0.36  # 0.3 sine, averaged not summed across channels


def _sf_wav(wave: np.ndarray, rate: int, subtype: str) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


@pytest.mark.parametrize("channels,rate", [(1, 16000), (2, 44100), (3, 16000)])  # 3: WAVE_FORMAT_EXTENSIBLE
def test_pcm_wav_is_read_from_its_header_exactly_as_libsndfile_reads_it(channels: int, rate: int) -> None:
    wave = np.random.default_rng(0).uniform(-0.5, 0.5, (rate // 2, channels)).astype(np.float32)
    data = _sf_wav(wave, rate, "PCM_16")
    found = audio.pcm_wav_format(data)
    assert found is not None and found[0] == audio.PcmFormat(rate, "s16le", channels)
    with sf.SoundFile(io.BytesIO(data)) as source:
        expected = audio.resample(source.read(dtype="float32", always_2d=True).mean(axis=1), rate, 16000)
    assert np.allclose(audio.decode_audio(data, 16000), expected, atol=1e-6)


@pytest.mark.parametrize("subtype", ["FLOAT", "PCM_U8", "PCM_24"])
def test_other_wav_sample_formats_go_to_a_decoder(subtype: str) -> None:
    data = _sf_wav(tone(0.5), 16000, subtype)
    assert audio.pcm_wav_format(data) is None
    assert audio.decode_audio(data, 16000).shape == (8000,)


def test_pcm_wav_header_walk_skips_padded_chunks_and_clips_an_overstated_size() -> None:
    data = wav_bytes(tone(0.5))
    fmt_end = 12 + 8 + struct.unpack_from("<I", data, 16)[0]
    odd = b"LIST" + struct.pack("<I", 3) + b"abc" + b"\x00"  # 3 bytes, padded to 4
    streamed = bytearray(data[:fmt_end] + odd + data[fmt_end:])
    struct.pack_into("<I", streamed, fmt_end + len(odd) + 4, 0xFFFFFFFF)  # "until the end", as streamers write
    found = audio.pcm_wav_format(bytes(streamed))
    assert found is not None
    _, start, end = found
    assert (start, end) == (fmt_end + len(odd) + 8, len(streamed))
    assert np.array_equal(audio.decode_audio(bytes(streamed), 16000), audio.decode_audio(data, 16000))


def test_pcm_s16le_and_f32le_resampled() -> None:
    wave = tone(1.0, 8000)
    s16 = audio.decode_pcm((wave * 32767).astype("<i2").tobytes(), audio.PcmFormat(8000), 16000)
    f32 = audio.decode_pcm(wave.astype("<f4").tobytes(), audio.PcmFormat(8000, "f32le"), 16000)
    assert s16.shape == f32.shape == (16000,)
    assert np.allclose(s16, f32, atol=1e-3)


@pytest.mark.parametrize(
    "data,error",
    [
        (b"", audio.EmptyAudioError),
        (b"plain text that is not audio" * 10, audio.UnsupportedFormatError),
        (b"OggS" + b"\x01" * 200, audio.UndecodableAudioError),
        (wav_bytes(np.zeros(0, np.float32)), audio.ZeroLengthAudioError),
    ],
)
def test_typed_errors(data: bytes, error: type[audio.AudioError]) -> None:
    with pytest.raises(error):
        audio.decode_audio(data, 16000)


def test_too_long_stops_early() -> None:
    with pytest.raises(audio.AudioTooLongError, match="limit of 1 s"):
        audio.decode_audio(wav_bytes(tone(3.0)), 16000, max_seconds=1.0)
    with pytest.raises(audio.AudioTooLongError):
        audio.decode_pcm(b"\x00\x00" * 32000, audio.PcmFormat(16000), 16000, max_seconds=1.0)


def test_pcm_rejects_bad_rate_and_encoding() -> None:
    with pytest.raises(audio.UnsupportedFormatError, match="sample rate"):
        audio.decode_pcm(b"\x00\x00", audio.PcmFormat(10), 16000)
    with pytest.raises(audio.UnsupportedFormatError, match="encoding"):
        audio.decode_pcm(b"\x00\x00", audio.PcmFormat(16000, "u8"), 16000)


def test_split_points_fall_in_quiet_gaps() -> None:
    rate = 16000
    speech = tone(9.0, rate)
    speech[int(8.2 * rate) : int(8.6 * rate)] = 0  # a pause just before the 9 s boundary
    wave = np.concatenate([speech, tone(9.0, rate), tone(3.0, rate)])
    starts = split_points(wave, rate, chunk_seconds=9.0)
    assert starts[0] == 0 and 8.2 * rate <= starts[1] < 8.6 * rate
    assert all(b - a <= 9 * rate for a, b in zip(starts, [*starts[1:], wave.shape[0]], strict=True))
    assert split_points(tone(3.0, rate), rate, 9.0) == [0]


def test_normalize_text() -> None:
    assert normalize_text("  Hello, World!  It’s 'quoted' ") == "hello world it's quoted"
