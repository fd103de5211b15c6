"""Generators of hostile audio uploads, made at test time (never committed): small files that
decode to hours ("audio bombs"), a WAV file of a million empty chunks, truncated and malformed files.

Each generator is fast: the bombs repeat one encoded packet or hand-written frame instead of
encoding hours of audio (three hours of Opus take about a second to write).
"""

from __future__ import annotations

import io
import struct

import av
import numpy as np

from tests.support import encode, tone, wav_bytes


def opus_silence(seconds: float, container: str = "ogg") -> bytes:
    """``seconds`` of silent Opus (48 kHz mono, 20 ms packets of 3 bytes) in ``ogg`` or ``webm``.

    Ogg states the length in its last page, so a decoder can refuse it from the header; WebM as
    written here does not, so only the budget of decoded samples stops it.
    """
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream("libopus", rate=48000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 48000), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 48000
        packets = list(stream.encode(frame))
        payload, time_base, duration = bytes(packets[5]), packets[5].time_base, 960
        for index in range(int(seconds * 48000 // duration)):
            packet = av.Packet(payload)
            packet.stream, packet.time_base = stream, time_base
            packet.pts = packet.dts = index * duration
            packet.duration = duration
            out.mux(packet)
    return buf.getvalue()


def flac_silence(seconds: float, rate: int = 48000, channels: int = 2, state_length: bool = True) -> bytes:
    """``seconds`` of 16-bit silence as FLAC frames of 65,535 samples with constant subframes
    (about 17 bytes per frame: an hour of 48 kHz stereo is about 45 KB).

    ``state_length=False`` writes 0 (unknown) as the total sample count, as streaming encoders
    do, so the length cannot be read from the header.
    """
    if rate != 48000:
        raise ValueError("the frame headers below encode 48 kHz")
    block = 65535
    total = int(seconds * rate)
    info = struct.pack(">HH", block, block) + b"\x00" * 6  # block sizes; frame sizes unknown
    packed = (rate << 44) | ((channels - 1) << 41) | (15 << 36) | (total if state_length else 0)
    info += packed.to_bytes(8, "big") + b"\x00" * 16  # rate, channels, 16 bits, samples; no MD5
    out = [b"fLaC", bytes([0x80, 0, 0, len(info)]), info]
    for number in range(-(-total // block)):
        size = min(block, total - number * block)
        header = bytes([0xFF, 0xF8, 0x7A, ((channels - 1) << 4) | 0x08]) + _utf8_number(number)
        header += struct.pack(">H", size - 1)
        header += bytes([_crc8(header)])
        frame = header + b"\x00\x00\x00" * channels  # CONSTANT subframes of value 0
        out.append(frame + struct.pack(">H", _crc16(frame)))
    return b"".join(out)


def many_chunks_wav(chunks: int, seconds: float = 0.5) -> bytes:
    """A valid 16 kHz PCM WAV file with ``chunks`` empty chunks between its fmt and data chunks
    (8 bytes each: a million make an 8 MB file)."""
    data = wav_bytes(tone(seconds))
    fmt_end = 12 + 8 + struct.unpack_from("<I", data, 16)[0]
    return data[:fmt_end] + b"junk\x00\x00\x00\x00" * chunks + data[fmt_end:]


def malformed() -> dict[str, bytes]:
    """Truncated and corrupted files of every container we read, by name."""
    good = {name: encode(name, seconds=1.0) for name in ("wav", "flac", "mp3", "ogg_opus", "webm_opus", "m4a_aac")}
    cases = {f"{name}_truncated_header": data[:24] for name, data in good.items()}
    cases.update({f"{name}_header_only": data[: min(len(data) // 8, 200)] for name, data in good.items()})
    rng = np.random.default_rng(0)
    for name, data in good.items():
        noisy = bytearray(data)
        for spot in rng.integers(4, len(noisy), size=max(8, len(noisy) // 50)):  # 2% of bytes, magic kept
            noisy[spot] = int(rng.integers(0, 256))
        cases[f"{name}_garbled"] = bytes(noisy)
    cases["riff_huge_fmt"] = b"RIFF\xff\xff\xff\xffWAVEfmt \xff\xff\xff\xff" + b"\x01\x00" * 8
    cases["wav_data_before_fmt"] = b"RIFF\x24\x00\x00\x00WAVEdata\x04\x00\x00\x00\x00\x00\x00\x00"
    cases["flac_magic_only"] = b"fLaC"
    cases["ogg_magic_garbage"] = b"OggS" + bytes(rng.integers(0, 256, 4000, dtype=np.uint8))
    cases["random_bytes"] = bytes(rng.integers(0, 256, 5000, dtype=np.uint8))
    return cases


def _utf8_number(value: int) -> bytes:
    """A FLAC frame number in its UTF-8-like coding."""
    if value < 0x80:
        return bytes([value])
    if value < 0x800:
        return bytes([0xC0 | value >> 6, 0x80 | value & 0x3F])
    if value < 0x10000:
        return bytes([0xE0 | value >> 12, 0x80 | (value >> 6) & 0x3F, 0x80 | value & 0x3F])
    raise ValueError("too many frames for this generator")


def _crc8(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc
