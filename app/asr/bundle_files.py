"""A bundle folder as files, read without PyTorch: its names, its config and its weights.

A bundle is a folder::

    models/<name>/
        config.json        # BundleConfig: frontend, architecture, tokens, frame rate
        model.safetensors  # the acoustic model's state dict (on a pretrained base: what was trained here)
        README.md          # the model card (an export writes it unless someone has edited it)
        lm/                # optional: the beam search's n-gram LM, lexicon and tuned settings

Both loaders (``app.asr.bundle`` builds PyTorch modules, ``app.asr.slim.bundle`` ONNX graphs)
read and check the folder here, and raise :class:`BundleError` naming what is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.numpy import load_file

from app.asr.configs import BundleConfig

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"
LM_FOLDER = "lm"
EXPORTED_CARD_FILE = "README.export.md"
EXPORTED_CARD_MARK = "<!-- written by the export step: a card without this first line is kept by later exports -->"

_UNION_TAGS = {"sepconv_ctc", "whisper_ctc", "log_mel", "whisper_log_mel"}
"""The ``type`` values that select a frontend or network kind; pydantic puts them in error locations."""


class BundleError(Exception):
    """A model bundle is missing, incomplete or inconsistent."""


def read_config(path: Path | str) -> BundleConfig:
    """Read and validate a bundle's ``config.json``."""
    if not Path(path).is_dir():
        raise BundleError(f"model bundle {path}: no such folder")
    config_path = Path(path) / CONFIG_FILE
    if not config_path.is_file():
        raise BundleError(f"model bundle {path}: missing {CONFIG_FILE}")
    try:
        raw = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"model bundle {path}: {CONFIG_FILE} is not valid JSON ({exc})") from exc
    try:
        return BundleConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'] if p not in _UNION_TAGS) or 'config'}: {err['msg']}"
            for err in exc.errors()
        )
        raise BundleError(f"model bundle {path}: invalid {CONFIG_FILE}: {problems}") from exc


def write_network_settings(path: Path | str, **settings: object) -> BundleConfig:
    """Set fields of the network config in the bundle's ``config.json`` (validated) and return
    the new config: what tuning and adapter steps write into a bundle."""
    config = read_config(path)
    network = type(config.model).model_validate({**config.model.model_dump(), **settings})
    updated = config.model_copy(update={"model": network})
    (Path(path) / CONFIG_FILE).write_text(updated.model_dump_json(indent=2) + "\n")
    return updated


def read_bundle_files(path: Path | str) -> tuple[BundleConfig, dict[str, np.ndarray]]:
    """The validated config and the stored weights (NumPy) of the bundle folder ``path``; weights
    stored in float16 come back as float32, the precision every runtime loads them in."""
    path = Path(path)
    config = read_config(path)
    for required in (WEIGHTS_FILE, CARD_FILE):
        if not (path / required).is_file():
            raise BundleError(f"model bundle {path}: missing {required}")
    try:
        arrays = load_file(str(path / WEIGHTS_FILE))
    except (SafetensorError, OSError) as exc:
        raise BundleError(f"model bundle {path}: cannot read {WEIGHTS_FILE} ({exc})") from exc
    return config, {k: v.astype(np.float32) if v.dtype == np.float16 else v for k, v in arrays.items()}


def check_weights(path: Path | str, state: Mapping[str, np.ndarray], expected: Mapping[str, tuple[int, ...]]) -> None:
    """Raise :class:`BundleError` unless ``state`` has exactly the ``expected`` names and shapes."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise BundleError(
            f"model bundle {path}: weights do not match config.json "
            f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''})"
        )
    for key, array in state.items():
        if tuple(array.shape) != tuple(expected[key]):
            raise BundleError(
                f"model bundle {path}: weight {key} has shape {tuple(array.shape)}, "
                f"config.json implies {tuple(expected[key])}"
            )
