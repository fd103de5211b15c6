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

from app.asr.configs import BundleConfig, FrontendConfig, ModelConfig
from app.asr.features import LogMelFrontend, WhisperLogMel
from app.asr.model import SepConvCTC
from app.asr.whisper.base import BaseUnavailable
from app.asr.whisper.model import SecondPass, WhisperCTC

Frontend = LogMelFrontend | WhisperLogMel
AcousticModel = SepConvCTC | WhisperCTC

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"


_UNION_TAGS = {"sepconv_ctc", "whisper_ctc", "log_mel", "whisper_log_mel"}
"""The ``type`` values that select a frontend or network kind; pydantic puts them in error locations."""


class BundleError(Exception):
    """A model bundle is missing, incomplete or inconsistent."""


@dataclass
class Bundle:
    """A loaded model: its config, feature frontend and acoustic model (eval mode, CPU), and the
    second pass (Whisper's pretrained decoder) when the network has one."""

    path: Path
    config: BundleConfig
    frontend: Frontend
    model: AcousticModel
    second_pass: SecondPass | None = None

    @property
    def name(self) -> str:
        return self.config.name

    def num_parameters(self) -> int:
        return self.model.num_parameters()


def build_model(config: BundleConfig) -> tuple[Frontend, AcousticModel]:
    """Instantiate the frontend and the model described by ``config``: random weights, except a
    Whisper network's pretrained encoder (read from its base package)."""
    if isinstance(config.frontend, FrontendConfig) and isinstance(config.model, ModelConfig):
        return LogMelFrontend(config.frontend), SepConvCTC(config.model)
    if isinstance(config.frontend, FrontendConfig) or isinstance(config.model, ModelConfig):
        raise BundleError(f"frontend {config.frontend.type} does not fit model {config.model.type}")
    model = WhisperCTC(config.model)
    model.load_base()
    return WhisperLogMel(config.frontend), model


def stored_state(model: AcousticModel) -> dict[str, torch.Tensor]:
    """The weights a bundle stores: all of them, or, on a pretrained base, only those trained here."""
    return model.trained_state() if isinstance(model, WhisperCTC) else model.state_dict()


def save_bundle(path: Path | str, config: BundleConfig, model: AcousticModel, card: str) -> Path:
    """Write ``config``, ``model``'s weights and the model card ``card`` into folder ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / CONFIG_FILE).write_text(config.model_dump_json(indent=2) + "\n")
    state = {
        k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).contiguous()
        for k, v in stored_state(model).items()
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
            f"{'.'.join(str(p) for p in err['loc'] if p not in _UNION_TAGS) or 'config'}: {err['msg']}"
            for err in exc.errors()
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
    try:
        frontend, model = build_model(config)
        second_pass = SecondPass.from_base(model.config) if isinstance(model, WhisperCTC) else None
    except BaseUnavailable as exc:
        raise BundleError(f"model bundle {path}: {exc}") from exc
    expected = stored_state(model)
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
    model.load_state_dict(state, strict=not isinstance(model, WhisperCTC))
    model.eval()
    frontend.eval()
    return Bundle(path=path, config=config, frontend=frontend, model=model, second_pass=second_pass)
