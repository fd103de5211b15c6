"""API keys: read from the settings, checked in constant time, known in logs only by a short id.

Keys come from ``ASR_API_KEYS`` (comma-separated) and ``ASR_API_KEYS_FILE`` (one per line: the key
itself or ``sha256:<hex of the key>``; ``#`` starts a comment). Only SHA-256 digests are kept.
A presented key is hashed and compared with every stored digest by ``hmac.compare_digest``.
"""

from __future__ import annotations

import hashlib
import hmac
import string
from dataclasses import dataclass
from pathlib import Path

from app.config import Settings

_HEX = frozenset(string.hexdigits)
# Characters a key may hold: visible ASCII but the comma that separates ASR_API_KEYS.
_KEY_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F)) - {","}


class KeyConfigError(ValueError):
    """The configured keys cannot be used; the message never contains a key."""


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def key_id(key_digest: bytes) -> str:
    """A key's name in logs and limits: the first 8 hex digits of its SHA-256."""
    return f"key:{key_digest.hex()[:8]}"


@dataclass(frozen=True)
class KeyRing:
    """The SHA-256 digests of the accepted keys; empty means no key is needed."""

    digests: tuple[bytes, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.digests)

    def identify(self, presented: str) -> str | None:
        """The id of the key ``presented`` is, or None. Every stored digest is compared, in
        constant time each, so the time taken says nothing about which or how many match."""
        candidate = digest(presented)
        found: bytes | None = None
        for stored in self.digests:
            if hmac.compare_digest(candidate, stored):
                found = stored
        return None if found is None else key_id(found)

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        digests = [digest(_checked(key, "ASR_API_KEYS")) for key in settings.api_keys.split(",") if key.strip()]
        if settings.api_keys_file is not None:
            from_file = _read_file(settings.api_keys_file)
            if not from_file:
                raise KeyConfigError(f"ASR_API_KEYS_FILE {settings.api_keys_file} holds no key")
            digests += from_file
        return cls(tuple(dict.fromkeys(digests)))


def _read_file(path: Path) -> list[bytes]:
    """Each line: ``<key or sha256:hex> [# comment]``; blank lines and ``#`` lines are skipped."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise KeyConfigError(f"cannot read ASR_API_KEYS_FILE {path}: {exc.strerror}") from exc
    digests = []
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        where = f"{path}, line {number}"
        if len(fields) > 1 and not fields[1].startswith("#"):
            raise KeyConfigError(f"{where}: a key is one word, optionally followed by a # comment")
        entry = fields[0]
        if entry.startswith("sha256:"):
            hexdigest = entry.removeprefix("sha256:")
            if len(hexdigest) != 64 or not set(hexdigest) <= _HEX:
                raise KeyConfigError(f"{where}: sha256: must be followed by 64 hex digits")
            digests.append(bytes.fromhex(hexdigest))
        else:
            digests.append(digest(_checked(entry, where)))
    return digests


def _checked(key: str, where: str) -> str:
    key = key.strip()
    if not set(key) <= _KEY_CHARS:
        raise KeyConfigError(f"{where}: a key is visible ASCII characters without spaces or commas")
    return key
