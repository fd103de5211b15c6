"""Whisper's pretrained encoder and decoder as the second pass, without PyTorch: ONNX Runtime for
the networks, NumPy for greedy decoding. The same maths and the same text as
``app.asr.whisper.model.SecondPass``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from app.asr.configs import WhisperCTCConfig
from app.asr.onnx_int8 import quantize_onnx_integer, scale_rows_apart
from app.asr.slim.graphs import cache_names, decoder_step, second_pass_encoder
from app.asr.slim.sessions import cpu_session
from app.asr.whisper.adapter import adapted
from app.asr.whisper.base import base_file, load_base
from app.asr.whisper.greedy import WINDOW_FRAMES, GreedyRows, TokenSearch, TopTokens, moves, token_caps
from app.asr.whisper.joint import JointDecoding
from app.asr.whisper.tokenizer import DecodingRules, WhisperTokenizer
from app.asr.whisper.weights import WhisperDims

SECOND_PASS_PRECISIONS = ("fp32", "int8")
SECOND_PASS_PRECISION = "int8"
"""The served second pass's precision on ONNX Runtime: integer matrix products gave a mean dev WER
of 15.7 % against 15.9 % for float32 (360 utterances) in 0.55x the time (docs/benchmarks.md), and
about 1.05x that for a single clip since the decoder quantizes each sequence on its own;
``fp32`` is the exact one, the same text as the PyTorch path."""


@dataclass
class SlimSecondPass:
    """The clip's log-mel frames in (zero-padded to 30 s, or at its own length with
    ``own_length``), Whisper's text out (no timestamps).

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
    joint: JointDecoding | None = None  # CTC-guided choice of tokens (None: Whisper's own greedy)
    own_length: bool = False  # the encoder at each clip's own length, not on the 30 s window

    @classmethod
    def from_base(
        cls,
        config: WhisperCTCConfig,
        num_threads: int = 0,
        precision: str = "fp32",
        trained: Mapping[str, np.ndarray] | None = None,
    ) -> SlimSecondPass:
        """Build both graphs from the installed base of ``config``, its decoder adapted by the
        bundle's weights ``trained`` where they hold an adapter (``app.asr.whisper.adapter``), and
        open them on the CPU, as they are (``fp32``) or with integer matrix products (``int8``,
        :func:`quantize_onnx_integer`)."""
        if precision not in SECOND_PASS_PRECISIONS:
            raise ValueError(f"the second pass runs in {' or '.join(SECOND_PASS_PRECISIONS)}, not {precision}")
        path = base_file(config.base)
        dims, base = load_base(path)
        state = adapted(base, trained or {})
        own_length = config.second_pass_states == "own_length"
        graphs = [second_pass_encoder(state, dims, own_length=own_length), decoder_step(state, dims, own_length)]
        if precision == "int8":
            encoder, decoder = (quantize_onnx_integer(graph) for graph in graphs)
            # the decoder runs a batch's sequences together: one scale per run would tie each
            # sequence's text to the others' (the encoder runs row by row, :meth:`cross_keys`)
            graphs = [encoder, scale_rows_apart(decoder)]
        encoder, decoder = (cpu_session(graph, num_threads) for graph in graphs)
        parameters = sum(v.size for k, v in state.items() if k.startswith("decoder."))
        tokenizer = WhisperTokenizer(path)
        rules = tokenizer.rules(dims.vocab_size, dims.max_tokens)
        return cls(encoder, decoder, tokenizer, rules, dims, parameters, own_length=own_length)

    def transcribe(
        self,
        features: np.ndarray,
        lengths: np.ndarray,
        ctc_log_probs: Sequence[np.ndarray] | None = None,
        pause: Callable[[], None] = lambda: None,
        prompt: str = "",
    ) -> list[str]:
        """Whisper's text (as it writes it) of each row of ``features`` (batch, n_mels, frames),
        Whisper log-mel frames zero past each row's ``lengths`` (batch,) (at most 30 s); with
        ``joint`` set, each row's CTC log-probs ``ctc_log_probs`` guide the choice of tokens.
        ``pause`` is called after the encoder and after each decoder step (:meth:`decode`);
        ``prompt``: text the decoder reads as what came before (:meth:`WhisperTokenizer.prompted`)."""
        if features.ndim != 3 or lengths.shape != (features.shape[0],):
            raise ValueError(
                f"features (batch, n_mels, frames) and lengths (batch,), got {features.shape}, {lengths.shape}"
            )
        cross = self.cross_keys(features, lengths)
        pause()
        rules = self.tokenizer.prompted(self.rules, prompt)
        caps = token_caps(lengths.tolist())
        search: TokenSearch = GreedyRows(rules, len(caps), caps)
        if self.joint is not None and ctc_log_probs is not None:
            search = self.joint.search(ctc_log_probs, caps)
        return [self.tokenizer.decode(ids) for ids in self.decode(cross, search, pause, rules)]

    def cross_keys(self, features: np.ndarray, lengths: np.ndarray) -> dict[str, np.ndarray]:
        """Every decoder layer's cross-attention keys and values (batch, heads, frames, head_dim) of
        ``features`` (batch, n_mels, frames of at most 30 s), zero past each row's ``lengths``,
        encoded zero-padded to 30 s or, with ``own_length``, at the row's own length, and then with
        ``cross_bias`` (batch, 1, 1, frames), -inf on the frames past a row's own.

        The encoder runs row by row, so a row's keys do not depend on the rows beside it: with
        integer matrix products a run quantizes each input with one scale, which a batch's rows
        (and its padding) would share. On 10 s clips it costs no time (docs/benchmarks.md).
        """
        if features.shape[-1] > WINDOW_FRAMES:
            raise ValueError(f"the second pass takes at most {WINDOW_FRAMES} frames, got {features.shape[-1]}")
        names = cache_names(self.dims.decoder_layers, "cross")
        rows = [self._encode_row(features[row, :, :n], names) for row, n in enumerate(lengths.tolist())]
        frames = max(keys[0].shape[2] for keys in rows)
        cross = {}
        for i, name in enumerate(names):
            _, heads, _, head_dim = rows[0][i].shape
            cross[name] = np.zeros((len(rows), heads, frames, head_dim), np.float32)
            for row, keys in enumerate(rows):
                cross[name][row, :, : keys[i].shape[2]] = keys[i][0]
        if self.own_length:
            valid = np.arange(frames)[None, :] < np.array([keys[0].shape[2] for keys in rows])[:, None]
            cross["cross_bias"] = np.where(valid, 0.0, -np.inf).astype(np.float32)[:, None, None, :]
        return cross

    def _encode_row(self, features: np.ndarray, names: list[str]) -> list[np.ndarray]:
        """One row's cross keys and values, each (1, heads, frames_out, head_dim), of its
        ``features`` (n_mels, frames)."""
        if self.own_length:
            lengths = np.array([features.shape[-1]], np.int64)
            return self.encoder.run(
                names, {"features": np.ascontiguousarray(features[None], np.float32), "lengths": lengths}
            )
        window = np.zeros((1, features.shape[0], WINDOW_FRAMES), np.float32)
        window[0, :, : features.shape[-1]] = features
        return self.encoder.run(names, {"features": window})

    def decode(
        self,
        cross: dict[str, np.ndarray],
        search: TokenSearch,
        pause: Callable[[], None] = lambda: None,
        rules: DecodingRules | None = None,
    ) -> list[list[int]]:
        """Each row's text tokens (prompt and end-of-text removed) as ``search`` chooses them (greedy
        decoding or the joint beam search), given the cross-attention keys and values ``cross``
        (rows, heads, frames, head_dim) per layer, with their ``cross_bias`` at own length
        (:meth:`cross_keys`). Each step the decoder runs the sequences of the rows still running, a
        row's beams reading that row's keys and values. ``pause`` is called after each step: the
        serving engine runs waiting urgent work there (``app.engine.runner``). ``rules``: these
        rules with a request's prompt (:meth:`transcribe`)."""
        rules, running = rules or self.rules, search.running
        head_dim = self.dims.d_model // self.dims.heads
        past_names = cache_names(self.dims.decoder_layers, "past")
        outputs = ["top_tokens", "top_log_probs", "end_log_prob", *cache_names(self.dims.decoder_layers, "present")]
        past = {name: np.zeros((search.sequences, self.dims.heads, 0, head_dim), np.float32) for name in past_names}
        rows = next(iter(cross.values())).shape[0]
        cross = _shrink(cross, list(range(rows)), running)
        bias = np.zeros(self.dims.vocab_size, np.float32)
        bias[list(rules.suppress)] = -np.inf
        first_bias = bias.copy()
        first_bias[list(rules.suppress_first)] = -np.inf
        scores = {"top_k": np.array([search.candidates]), "end_token": np.array([rules.end_of_text])}
        tokens = np.array([rules.prompt] * search.sequences, np.int64)
        while not search.finished:
            step_bias = first_bias if search.step == 0 else bias
            feeds = {"tokens": tokens, **past, **cross, **scores, "logit_bias": step_bias}
            top_tokens, top_log_probs, end, *presents = self.decoder.run(outputs, feeds)
            parents, inputs = search.advance(TopTokens(top_tokens, top_log_probs, end[:, 0]))
            if search.running != running:  # rows done leave the batch
                cross = _shrink(cross, running, search.running)
                running = search.running
            past = {name: present[parents] for name, present in zip(past_names, presents, strict=True)}
            tokens = inputs[:, None]
            pause()
        return search.best()

    def num_parameters(self) -> int:
        """The decoder's parameters (token embedding and positions included)."""
        return self.parameters


def _shrink(cross: dict[str, np.ndarray], before: list[int], after: list[int]) -> dict[str, np.ndarray]:
    """The keys and values of rows ``after``, shrunk in place from those of rows ``before``
    (``app.asr.whisper.greedy.shrink``): the rows that move are copied, the rest are not touched."""
    for place, source in moves(before, after):
        for keys in cross.values():
            keys[place] = keys[source]
    return {name: keys[: len(after)] for name, keys in cross.items()}
