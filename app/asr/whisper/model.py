"""The served Whisper network: encoder + CTC head, and the pretrained decoder as a second pass."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from app.asr.configs import WhisperCTCConfig
from app.asr.whisper.adapter import adapted, adapter_of
from app.asr.whisper.base import base_file, load_base
from app.asr.whisper.decoder import WhisperDecoder
from app.asr.whisper.encoder import WhisperEncoder
from app.asr.whisper.greedy import WINDOW_FRAMES, token_caps
from app.asr.whisper.joint import JointDecoding
from app.asr.whisper.tokenizer import DecodingRules, WhisperTokenizer
from app.asr.whisper.weights import part


def as_tensors(state: dict[str, np.ndarray]) -> dict[str, Tensor]:
    """The NumPy weights of the base as tensors (sharing their memory)."""
    return {k: torch.from_numpy(v) for k, v in state.items()}


class WhisperCTC(nn.Module):
    """Whisper log-mel frames in, per-frame CTC log-probabilities (50 per second) out."""

    def __init__(self, config: WhisperCTCConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = WhisperEncoder(
            config.n_mels, config.d_model, config.heads, config.encoder_layers, config.max_frames
        )
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.d_model, config.vocab_size)

    @property
    def stride(self) -> int:
        return self.config.stride

    def forward(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """features (batch, n_mels, frames) -> log_probs (batch, frames_out, vocab) and lengths (batch,)."""
        states, out_lengths = self.encoder(features, lengths)
        return self.ctc(states), out_lengths

    def ctc(self, states: Tensor) -> Tensor:
        """CTC log-probs (batch, frames, vocab) of encoder states (batch, frames, d_model)."""
        return torch.log_softmax(self.head(self.dropout(states)).float(), dim=-1)

    def trained_state(self) -> dict[str, Tensor]:
        """What a bundle stores: the head, and the encoder blocks fine-tuned here."""
        keep = ("head.", *(f"encoder.blocks.{i}." for i in self.config.tuned_layers))
        return {k: v for k, v in self.state_dict().items() if k.startswith(keep)}

    def load_base(self) -> None:
        """Load the pretrained encoder weights from the installed base package."""
        _, state = load_base(base_file(self.config.base))
        self.encoder.load_state_dict(as_tensors(part(state, "encoder")), strict=False)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


@dataclass
class SecondPass:
    """Whisper's pretrained encoder and decoder: the clip's log-mel frames in, text out (no
    timestamps).

    The decoder was trained only on 30-second encoder windows: alone, on states of the clip's own
    length it loops instead of ending (docs/benchmarks.md). So by default this pass encodes the
    zero-padded window with the untouched pretrained encoder (the CTC path's encoder may be
    fine-tuned); with ``own_length`` it encodes the clip at its own length, which the CTC path's
    prefix scores (``joint``) and an adapter trained on such states keep from looping.
    """

    encoder: WhisperEncoder
    decoder: WhisperDecoder
    tokenizer: WhisperTokenizer
    rules: DecodingRules
    joint: JointDecoding | None = None  # CTC-guided choice of tokens (None: Whisper's own greedy)
    adapter: dict[str, np.ndarray] = field(default_factory=dict)  # the decoder's adapter, as the bundle stores it
    own_length: bool = False  # the encoder at each clip's own length, not on the 30 s window

    @classmethod
    def from_base(cls, config: WhisperCTCConfig, trained: Mapping[str, np.ndarray] | None = None) -> SecondPass:
        """The installed base of ``config``, its decoder adapted by the bundle's weights ``trained``
        where they hold an adapter (``app.asr.whisper.adapter``)."""
        path = base_file(config.base)
        dims, base = load_base(path)
        adapter = adapter_of(trained or {})
        state = adapted(base, adapter)
        encoder = WhisperEncoder(dims.n_mels, dims.d_model, dims.heads, dims.encoder_layers, dims.max_frames)
        encoder.load_state_dict(as_tensors(part(state, "encoder")))
        decoder = WhisperDecoder(dims.vocab_size, dims.d_model, dims.heads, dims.decoder_layers, dims.max_tokens)
        decoder.load_state_dict(as_tensors(part(state, "decoder")))
        tokenizer = WhisperTokenizer(path)
        rules = tokenizer.rules(dims.vocab_size, dims.max_tokens)
        own_length = config.second_pass_states == "own_length"
        return cls(encoder.eval(), decoder.eval(), tokenizer, rules, adapter=adapter, own_length=own_length)

    @torch.inference_mode()
    def transcribe(
        self,
        features: Tensor,
        lengths: Tensor,
        ctc_log_probs: Sequence[np.ndarray] | None = None,
        prompt: str = "",
    ) -> list[str]:
        """Whisper's text (as it writes it) of each row of ``features`` (batch, n_mels, frames),
        Whisper log-mel frames zero past each row's ``lengths`` (at most 30 s); with ``joint``
        set, each row's CTC log-probs ``ctc_log_probs`` guide the choice of tokens. ``prompt``:
        text the decoder reads as what came before (:meth:`WhisperTokenizer.prompted`)."""
        if features.shape[-1] > WINDOW_FRAMES:
            raise ValueError(f"the second pass takes at most {WINDOW_FRAMES} frames, got {features.shape[-1]}")
        states, state_lengths = self.encode(features, lengths)
        rules = self.tokenizer.prompted(self.rules, prompt)
        caps = token_caps(lengths.tolist())
        if self.joint is not None and ctc_log_probs is not None:
            search = self.joint.search(ctc_log_probs, caps)
            tokens = self.decoder.decode(states, state_lengths, rules, search)
        else:
            tokens = self.decoder.greedy(states, state_lengths, rules, caps)
        return [self.tokenizer.decode(ids) for ids in tokens]

    def encode(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """The states the decoder reads (batch, frames, d_model) and their valid frames (batch,):
        of the 30 s window, or of each row at its own length (``own_length``, padded rows masked)."""
        if self.own_length:
            return self.encoder(features, lengths)
        window = torch.nn.functional.pad(features, (0, WINDOW_FRAMES - features.shape[-1]))
        return self.encoder(window, torch.full((features.shape[0],), WINDOW_FRAMES, device=features.device))

    def to(self, device: str) -> SecondPass:
        """Move the encoder and decoder to ``device``."""
        self.encoder.to(device)
        self.decoder.to(device)
        return self

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.decoder.parameters())
