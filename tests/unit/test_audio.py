"""Audio decoding: formats, downmix, resampling, raw PCM, and the typed errors."""

from __future__ import annotations

import io
import struct
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from app.asr import audio, wav
from app.asr.resample import resample
from app.asr.segment import split_points
from app.asr.text import normalize_text
from tests.abuse.bombs import flac_silence
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
    found = wav.pcm_wav_format(data)
    assert found is not None and found[0] == audio.PcmFormat(rate, "s16le", channels)
    with sf.SoundFile(io.BytesIO(data)) as source:
        expected = _one_shot(source.read(dtype="float32", always_2d=True).mean(axis=1), rate)
    assert np.allclose(audio.decode_audio(data, 16000), expected, atol=1e-6)


def _one_shot(samples: np.ndarray, rate: int) -> np.ndarray:
    """The whole signal resampled to 16 kHz in one go, as a reference for block-by-block decoding."""
    return resample(samples.astype(np.float32), rate, 16000)


@pytest.mark.parametrize("channels,rate", [(2, 44100), (1, 8000), (6, 48000)])
def test_block_by_block_decoding_equals_decoding_at_once(channels: int, rate: int) -> None:
    seconds = 3 * audio.BLOCK_FRAMES / rate + 0.3  # several blocks and a partial one
    wave = np.random.default_rng(1).uniform(-0.5, 0.5, (int(seconds * rate), channels)).astype(np.float32)
    pcm = (wave * 32767).astype("<i2")
    expected = _one_shot(pcm.astype(np.float32).mean(axis=1) / 32768, rate)
    for data in (_sf_wav(wave, rate, "PCM_16"), _sf_wav(wave, rate, "FLOAT")):
        assert np.allclose(audio.decode_audio(data, 16000), expected, atol=1e-4)
    raw = audio.decode_pcm(pcm.tobytes(), audio.PcmFormat(rate, "s16le", channels), 16000)
    assert np.allclose(raw, expected, atol=1e-6)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resampling_keeps_the_speech_band(rate: int) -> None:
    def speechlike(t: np.ndarray) -> np.ndarray:
        return 0.2 * np.sin(2 * np.pi * 300 * t) + 0.1 * np.sin(2 * np.pi * 2500 * t)

    source = speechlike(np.arange(2 * rate) / rate).astype(np.float32)
    decoded = audio.decode_audio(_sf_wav(source, rate, "FLOAT"), 16000)
    assert decoded.shape == (32000,)
    inner = slice(200, -200)  # the filter's edges
    # The same signal sampled at 16 kHz: no delay, no gain, no aliasing in the speech band.
    assert np.abs(decoded[inner] - speechlike(np.arange(32000) / 16000)[inner]).max() < 1e-4


@pytest.mark.parametrize("subtype", ["FLOAT", "PCM_U8", "PCM_24"])
def test_other_wav_sample_formats_go_to_a_decoder(subtype: str) -> None:
    data = _sf_wav(tone(0.5), 16000, subtype)
    assert wav.pcm_wav_format(data) is None
    assert audio.decode_audio(data, 16000).shape == (8000,)


def test_pcm_wav_header_walk_skips_padded_chunks_and_clips_an_overstated_size() -> None:
    data = wav_bytes(tone(0.5))
    fmt_end = 12 + 8 + struct.unpack_from("<I", data, 16)[0]
    odd = b"LIST" + struct.pack("<I", 3) + b"abc" + b"\x00"  # 3 bytes, padded to 4
    streamed = bytearray(data[:fmt_end] + odd + data[fmt_end:])
    struct.pack_into("<I", streamed, fmt_end + len(odd) + 4, 0xFFFFFFFF)  # "until the end", as streamers write
    found = wav.pcm_wav_format(bytes(streamed))
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


def test_audio_exactly_at_the_limit_is_accepted() -> None:
    for rate in (16000, 44100):
        decoded = audio.decode_audio(_sf_wav(tone(2.0, rate, channels=2), rate, "PCM_16"), 16000, max_seconds=2.0)
        assert abs(decoded.shape[0] - 32000) <= 1


def test_the_budget_is_checked_while_decoding_not_only_from_the_header() -> None:
    """A FLAC file whose header does not state its length (total samples 0) is stopped by the
    budget of decoded samples, at it: memory stays near the budget, not the file's length."""
    flac = bytearray(_flac(np.zeros((60 * 48000, 2), np.float32), 48000))
    flac[8 + 13 : 8 + 18] = bytes([flac[8 + 13] & 0xF0]) + b"\x00" * 4  # STREAMINFO: total samples unknown
    tracemalloc.start()
    try:
        with pytest.raises(audio.AudioTooLongError, match="limit of 1 s"):
            audio.decode_audio(bytes(flac), 16000, max_seconds=1.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20  # decoding it all at 48 kHz stereo would take 23 MB
    with pytest.raises(audio.AudioTooLongError):
        audio.DecodedAudio(16000, 1.0).append(np.zeros(16000 + audio.RESAMPLER_SLACK + 1, np.float32))


def test_decoding_holds_the_output_not_the_source() -> None:
    """Ten minutes of 48 kHz 6-channel FLAC: decoding it whole at its own rate and channels would
    take 691 MB; block by block, memory is the 16 kHz mono output (38 MB) and a few blocks."""
    flac = flac_silence(600, channels=6)
    tracemalloc.start()
    try:
        decoded = audio.decode_audio(flac, 16000, max_seconds=1800)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert decoded.shape == (600 * 16000,)
    assert peak < decoded.nbytes + (8 << 20)


@pytest.mark.parametrize("expected", [0, 10, 1000])
def test_decoded_audio_joins_its_buffers_in_order(expected: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audio, "SEGMENT_SAMPLES", 64)
    blocks = [np.arange(start, start + size, dtype=np.float32) for start, size in ((0, 5), (5, 100), (105, 300))]
    out = audio.DecodedAudio(16000, 1.0, expected=expected)
    for block in blocks:
        out.append(block)
    assert np.array_equal(out.result(), np.arange(405, dtype=np.float32))
    with pytest.raises(audio.ZeroLengthAudioError):
        audio.DecodedAudio(16000, 1.0).result()


def test_decoding_stops_at_the_deadline() -> None:
    data = _sf_wav(tone(5.0, 44100), 44100, "PCM_16")
    with pytest.raises(audio.DecodeDeadlineError):
        audio.decode_audio(data, 16000, deadline=0.0)
    assert audio.decode_audio(data, 16000, deadline=float("inf")).shape[0] == 80000


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_samples_are_refused(bad: float) -> None:
    wave = tone(0.5)
    wave[100] = bad
    with pytest.raises(audio.UndecodableAudioError, match="NaN or infinite"):
        audio.decode_pcm(wave.astype("<f4").tobytes(), audio.PcmFormat(16000, "f32le"), 16000)
    with pytest.raises(audio.UndecodableAudioError, match="NaN or infinite"):
        audio.decode_audio(_sf_wav(wave, 16000, "FLOAT"), 16000)


def test_a_wav_file_of_many_empty_chunks_is_refused_after_a_bounded_walk() -> None:
    data = wav_bytes(tone(0.5))
    fmt_end = 12 + 8 + struct.unpack_from("<I", data, 16)[0]
    few = data[:fmt_end] + b"junk\x00\x00\x00\x00" * (wav.MAX_WAV_CHUNKS - 3) + data[fmt_end:]
    assert wav.pcm_wav_format(few) is not None  # a handful of extra chunks is fine
    many = data[:fmt_end] + b"junk\x00\x00\x00\x00" * 100_000 + data[fmt_end:]
    with pytest.raises(audio.UndecodableAudioError, match="chunks"):
        wav.pcm_wav_format(many)
    with pytest.raises(audio.UndecodableAudioError, match="chunks"):
        audio.decode_audio(many, 16000)


def _flac(wave: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


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
