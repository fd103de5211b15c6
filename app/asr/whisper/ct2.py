"""A reader of CTranslate2 model files (``model.bin``, format version 6) into NumPy arrays.

The layout is simple: a u32 format version, the spec name (u16 length + bytes), a u32 spec
revision, a u32 variable count, then each variable as a length-prefixed name, a u8 rank, u32
dimensions, a u8 data type, a u32 byte count and the raw little-endian data; then u32 alias
count and (alias, target) name pairs. Only what Whisper specs use is read.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

SUPPORTED_VERSIONS = (5, 6)

# CTranslate2's DataType enum
_DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
}


class CT2FormatError(ValueError):
    """The file is not a CTranslate2 model this reader understands."""


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def take(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self.data, self.offset)
        self.offset += struct.calcsize(fmt)
        return int(value)

    def string(self) -> str:
        size = self.take("<H")
        raw = self.data[self.offset : self.offset + size]
        self.offset += size
        return raw.rstrip(b"\0").decode("utf-8")

    def raw(self, size: int) -> bytes:
        if self.offset + size > len(self.data):
            raise CT2FormatError("truncated file")
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk


def read_ct2(path: Path | str) -> tuple[str, dict[str, np.ndarray]]:
    """The spec name and every variable of a CTranslate2 ``model.bin`` (aliases resolved).

    Arrays keep the file's data type (Whisper conversions are float16).
    """
    cursor = _Cursor(Path(path).read_bytes())
    try:
        version = cursor.take("<I")
        if version not in SUPPORTED_VERSIONS:
            raise CT2FormatError(f"CTranslate2 format version {version} is not supported ({SUPPORTED_VERSIONS})")
        spec = cursor.string()
        cursor.take("<I")  # spec revision
        variables: dict[str, np.ndarray] = {}
        for _ in range(cursor.take("<I")):
            name = cursor.string()
            shape = tuple(cursor.take("<I") for _ in range(cursor.take("<B")))
            dtype_id = cursor.take("<B")
            if dtype_id not in _DTYPES:
                raise CT2FormatError(f"variable {name}: unsupported data type {dtype_id}")
            data = cursor.raw(cursor.take("<I"))
            variables[name] = np.frombuffer(data, dtype=_DTYPES[dtype_id]).reshape(shape)
        for _ in range(cursor.take("<I")):
            alias, target = cursor.string(), cursor.string()
            variables[alias] = variables[target]
    except struct.error as exc:
        raise CT2FormatError(f"truncated file ({exc})") from exc
    return spec, variables
