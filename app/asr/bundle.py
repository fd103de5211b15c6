"""Model bundles as PyTorch modules: the format that training writes and the torch path serves.

The folder's files are read and checked in ``app.asr.bundle_files`` (no PyTorch there); this module
builds the frontend and the network from them, and writes bundles.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from app.asr.bundle_files import (
    CARD_FILE,
    CONFIG_FILE,
    EXPORTED_CARD_FILE,
    EXPORTED_CARD_MARK,
    WEIGHTS_FILE,
    BundleError,
    check_weights,
    read_bundle_files,
)
from app.asr.configs import BundleConfig, FrontendConfig, ModelConfig
from app.asr.features import LogMelFrontend, WhisperLogMel
from app.asr.model import SepConvCTC
from app.asr.whisper.adapter import adapter_shapes
from app.asr.whisper.base import BaseUnavailable, base_file, load_base
from app.asr.whisper.joint import joint_decoding
from app.asr.whisper.model import SecondPass, WhisperCTC

logger = logging.getLogger(__name__)

Frontend = LogMelFrontend | WhisperLogMel
AcousticModel = SepConvCTC | WhisperCTC

__all__ = [
    "CARD_FILE",
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "Bundle",
    "BundleError",
    "build_model",
    "load_bundle",
    "save_bundle",
]


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


def save_bundle(
    path: Path | str, config: BundleConfig, model: AcousticModel, card: str, floats: torch.dtype = torch.float32
) -> Path:
    """Write ``config``, ``model``'s weights (floating-point ones as ``floats``: float16 halves the
    file, and loading widens them to float32 again) and the model card ``card`` into folder ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / CONFIG_FILE).write_text(config.model_dump_json(indent=2) + "\n")
    state = {
        k: v.detach().to("cpu", floats if v.is_floating_point() else v.dtype).contiguous()
        for k, v in stored_state(model).items()
    }
    save_file(state, str(path / WEIGHTS_FILE), metadata={"name": config.name, "format": "pt"})
    write_card(path, card)
    return path


def write_card(path: Path, card: str) -> Path:
    """Write the model card ``card`` into bundle folder ``path``; return the file written.

    It becomes ``README.md`` unless that file is a card someone has edited (one that does not start
    with :data:`EXPORTED_CARD_MARK`, the line every written card starts with): such a card, with the
    history and test figures a generated one cannot know, stays, and the new card goes beside it
    as ``README.export.md``.
    """
    target = path / CARD_FILE
    if target.exists() and not target.read_text().startswith(EXPORTED_CARD_MARK):
        logger.warning("%s is an edited model card and stays; the exported card is %s", target, EXPORTED_CARD_FILE)
        target = path / EXPORTED_CARD_FILE
    target.write_text(f"{EXPORTED_CARD_MARK}\n{card}")
    return target


def load_bundle(path: Path | str, second_pass_beams: int | None = None) -> Bundle:
    """Load and validate a bundle folder; raise :class:`BundleError` on any problem.
    ``second_pass_beams`` overrides the config's ``ctc_beams``."""
    path = Path(path)
    config, arrays = read_bundle_files(path)
    try:
        frontend, model = build_model(config)
        expected = {k: tuple(v.shape) for k, v in stored_state(model).items()}
        if isinstance(model, WhisperCTC):
            expected |= adapter_shapes(model.config, load_base(base_file(model.config.base))[1])
        check_weights(path, arrays, expected)  # before the decoder's adapter is merged
        second_pass = SecondPass.from_base(model.config, arrays) if isinstance(model, WhisperCTC) else None
        if second_pass is not None:
            second_pass.joint = joint_decoding(config, second_pass.tokenizer, second_pass_beams)
    except BaseUnavailable as exc:
        raise BundleError(f"model bundle {path}: {exc}") from exc
    state = {k: torch.from_numpy(v) for k, v in arrays.items()}
    model.load_state_dict(state, strict=not isinstance(model, WhisperCTC))
    model.eval()
    frontend.eval()
    return Bundle(path=path, config=config, frontend=frontend, model=model, second_pass=second_pass)
