"""Model bundles: the one on-disk format that training writes and the server reads.

A bundle is a folder::

    models/<name>/
        config.json        # BundleConfig: frontend, architecture, tokens, frame rate
        model.safetensors  # the acoustic model's state dict
        README.md          # the model card

Loading validates the folder and raises :class:`BundleError` naming what is wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from app.asr.configs import BundleConfig
from app.asr.features import LogMelFrontend
from app.asr.model import SepConvCTC

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"


class BundleError(Exception):
    """A model bundle is missing, incomplete or inconsistent."""


@dataclass
class Bundle:
    """A loaded model: its config, feature frontend and acoustic model (eval mode, CPU)."""

    path: Path
    config: BundleConfig
    frontend: LogMelFrontend
    model: SepConvCTC

    @property
    def name(self) -> str:
        return self.config.name

    def num_parameters(self) -> int:
        return self.model.num_parameters()


def build_model(config: BundleConfig) -> tuple[LogMelFrontend, SepConvCTC]:
    """Instantiate the frontend and a randomly initialised model described by ``config``."""
    return LogMelFrontend(config.frontend), SepConvCTC(config.model)


def save_bundle(path: Path | str, config: BundleConfig, model: SepConvCTC, card: str) -> Path:
    """Write ``config``, ``model``'s weights and the model card ``card`` into folder ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / CONFIG_FILE).write_text(config.model_dump_json(indent=2) + "\n")
    state = {
        k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).contiguous()
        for k, v in model.state_dict().items()
    }
    save_file(state, str(path / WEIGHTS_FILE), metadata={"name": config.name, "format": "pt"})
    (path / CARD_FILE).write_text(card)
    return path


def read_config(path: Path | str) -> BundleConfig:
    """Read and validate a bundle's ``config.json``."""
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
            f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}" for err in exc.errors()
        )
        raise BundleError(f"model bundle {path}: invalid {CONFIG_FILE}: {problems}") from exc


def load_bundle(path: Path | str) -> Bundle:
    """Load and validate a bundle folder; raise :class:`BundleError` on any problem."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"model bundle {path}: no such folder")
    config = read_config(path)
    for required in (WEIGHTS_FILE, CARD_FILE):
        if not (path / required).is_file():
            raise BundleError(f"model bundle {path}: missing {required}")
    try:
        state = load_file(str(path / WEIGHTS_FILE))
    except (SafetensorError, OSError) as exc:
        raise BundleError(f"model bundle {path}: cannot read {WEIGHTS_FILE} ({exc})") from exc
    frontend, model = build_model(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise BundleError(
            f"model bundle {path}: weights do not match config.json "
            f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''})"
        )
    for key, tensor in state.items():
        if tensor.shape != expected[key].shape:
            raise BundleError(
                f"model bundle {path}: weight {key} has shape {tuple(tensor.shape)}, "
                f"config.json implies {tuple(expected[key].shape)}"
            )
    model.load_state_dict(state)
    model.eval()
    frontend.eval()
    return Bundle(path=path, config=config, frontend=frontend, model=model)
