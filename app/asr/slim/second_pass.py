"""Whisper's pretrained encoder and decoder as the second pass, without PyTorch: ONNX Runtime for
the networks, NumPy for greedy decoding. The same maths and the same text as
``app.asr.whisper.model.SecondPass``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from app.asr.configs import WhisperCTCConfig
from app.asr.slim.graphs import cache_names, decoder_step, second_pass_encoder
from app.asr.slim.sessions import cpu_session
from app.asr.whisper.base import base_file, load_base
from app.asr.whisper.tokenizer import DecodingRules, WhisperTokenizer
from app.asr.whisper.weights import WhisperDims


@dataclass
class SlimSecondPass:
    """The clip's log-mel frames zero-padded to 30 s in, Whisper's text out (greedy, no timestamps).

    The encoder graph writes every decoder layer's cross-attention keys and values once per batch;
    the decoder graph then runs one step per token, rows side by side, each stopping at
    end-of-text or at its cap (``SecondPass.transcribe`` and ``WhisperDecoder.greedy``).
    """

    encoder: ort.InferenceSession
    decoder: ort.InferenceSession
    tokenizer: WhisperTokenizer
    rules: DecodingRules
    dims: WhisperDims
    parameters: int  # the decoder's, as SecondPass counts them
    window_frames: int = 3000  # 30 s of log-mel frames
    frame_seconds: float = 0.01  # one log-mel frame
    tokens_per_second: float = 12.0  # cap on output length: a runaway loop stops there

    @classmethod
    def from_base(cls, config: WhisperCTCConfig, num_threads: int = 0) -> SlimSecondPass:
        """Build both graphs from the installed base of ``config`` and open them on the CPU."""
        path = base_file(config.base)
        dims, state = load_base(path)
        encoder = cpu_session(second_pass_encoder(state, dims), num_threads)
        decoder = cpu_session(decoder_step(state, dims), num_threads)
        parameters = sum(v.size for k, v in state.items() if k.startswith("decoder."))
        tokenizer = WhisperTokenizer(path)
        return cls(encoder, decoder, tokenizer, tokenizer.rules(dims.vocab_size, dims.max_tokens), dims, parameters)

    def transcribe(self, features: np.ndarray, lengths: np.ndarray) -> list[str]:
        """Whisper's text (as it writes it) of each row of ``features`` (batch, n_mels, frames),
        Whisper log-mel frames zero past each row's ``lengths`` (batch,) (at most 30 s)."""
        if features.ndim != 3 or lengths.shape != (features.shape[0],):
            raise ValueError(
                f"features (batch, n_mels, frames) and lengths (batch,), got {features.shape}, {lengths.shape}"
            )
        if features.shape[-1] > self.window_frames:
            raise ValueError(f"the second pass takes at most {self.window_frames} frames, got {features.shape[-1]}")
        window = np.zeros((*features.shape[:2], self.window_frames), np.float32)
        window[..., : features.shape[-1]] = features
        names = cache_names(self.dims.decoder_layers, "cross")
        cross = dict(zip(names, self.encoder.run(names, {"features": window}), strict=True))
        caps = [8 + int(self.tokens_per_second * n * self.frame_seconds) for n in lengths.tolist()]
        return [self.tokenizer.decode(ids) for ids in self.greedy(cross, caps)]

    def greedy(self, cross: dict[str, np.ndarray], max_new: list[int]) -> list[list[int]]:
        """Greedy text tokens (prompt and end-of-text removed) of each row, given the cross-attention
        keys and values ``cross`` (batch, heads, frames, head_dim) per layer and a cap per row."""
        rules, batch = self.rules, len(max_new)
        limit = rules.max_tokens - len(rules.prompt)
        caps = [min(limit, m) for m in max_new]
        head_dim = self.dims.d_model // self.dims.heads
        past_names = cache_names(self.dims.decoder_layers, "past")
        outputs = ["logits", *cache_names(self.dims.decoder_layers, "present")]
        past = {name: np.zeros((batch, self.dims.heads, 0, head_dim), np.float32) for name in past_names}
        suppress, suppress_first = np.array(rules.suppress), np.array(rules.suppress_first)
        tokens = np.array([rules.prompt] * batch, np.int64)
        out: list[list[int]] = [[] for _ in range(batch)]
        done = [cap <= 0 for cap in caps]
        step = 0
        while not all(done):
            logits, *presents = self.decoder.run(outputs, {"tokens": tokens, **past, **cross})
            logits[:, suppress] = -np.inf
            if step == 0:
                logits[:, suppress_first] = -np.inf
            chosen = logits.argmax(axis=-1)
            for row, token in enumerate(chosen.tolist()):
                if done[row]:
                    continue
                if token == rules.end_of_text:
                    done[row] = True
                else:
                    out[row].append(token)
                    done[row] = len(out[row]) >= caps[row]
            past = dict(zip(past_names, presents, strict=True))
            tokens = chosen[:, None].astype(np.int64)
            step += 1
        return out

    def num_parameters(self) -> int:
        """The decoder's parameters (token embedding and positions included)."""
        return self.parameters
