"""This server's recognizers as systems of ``bench.peers_accuracy``: the second pass, and the CTC path
greedy or with beam search and the LM, on any runtime and precision, built as the server builds them."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from app.asr.beam import BeamDecoder, load_lexicon_lm
from app.asr.ctc import GreedyDecoder
from app.asr.segment import split_spans
from app.engine.engine import SECOND_PASS_PIECE_S
from bench.recognizers import aligned_decoder, make_recognizer

DEFAULT_BUNDLE = Path(__file__).resolve().parent.parent / "models" / "en-whisper-tiny"


def engine_pieces(wave: np.ndarray, rate: int) -> list[np.ndarray]:
    """``wave`` cut where the engine cuts audio for the second pass (pieces of at most 25 s)."""
    return [wave[start:end] for start, end in split_spans(wave, rate, SECOND_PASS_PIECE_S)]


class OurModel:
    """A bundle behind the server's recognizer, decoded one way (``attention``, ``greedy`` or ``beam``)."""

    def __init__(self, model: Path, decoder: str, threads: int, runtime: str = "auto", precision: str = "auto") -> None:
        second = "fp32" if precision == "fp32" and runtime != "torch" else "auto"
        self.recognizer = make_recognizer(
            model, runtime=runtime, precision=precision, num_threads=threads, second_pass_precision=second
        )
        config = self.recognizer.config
        suffix = ("-fp32" if precision == "fp32" else "") + ("-torch" if runtime == "torch" else "")
        self.name = f"ours-{decoder}{suffix}"
        self.rate = config.sample_rate
        self.decoder = decoder
        self.aligner = aligned_decoder(self.recognizer)
        self.greedy = GreedyDecoder(config.tokens, config.blank_id, config.frame_seconds, config.word_delimiter)
        self.beam: BeamDecoder | None = None
        if decoder == "beam":
            lm = load_lexicon_lm(model / "lm", config.tokens, config.blank_id, config.word_delimiter)
            if lm is None:
                raise SystemExit(f"{model} has no lm/ folder for beam search")
            self.beam = BeamDecoder(lm, lm.defaults, config.frame_seconds)

    def transcribe(self, wave: np.ndarray) -> str:
        if self.decoder == "attention":
            return self.second_pass_text(wave)
        return self.ctc_text(wave, self.beam or self.greedy)

    def second_pass_text(self, wave: np.ndarray, prompt: str = "") -> str:
        """The second pass's text of ``wave``, cut as the engine cuts it, each piece reading ``prompt``."""
        outputs = self.recognizer.second_pass(engine_pieces(wave, self.rate), prompt=prompt)
        return " ".join(self.aligner.align(out).text for out in outputs).strip()

    def ctc_text(self, wave: np.ndarray, decoder: GreedyDecoder | BeamDecoder) -> str:
        """``decoder``'s text of the CTC path's log-probs of ``wave``, cut as the engine cuts it."""
        pieces = engine_pieces(wave, self.rate)
        return " ".join(decoder.decode(lp).text for lp in self.recognizer.infer(pieces)).strip()

    def transcribe_batch(self, waves: list[np.ndarray]) -> list[str]:
        """Clips of at most 25 s in one batch, as the server's batcher hands concurrent requests over."""
        if self.decoder == "attention":
            outputs = self.recognizer.second_pass(waves)
            return [self.aligner.align(out).text for out in outputs]
        decoder = self.beam or self.greedy
        return [decoder.decode(lp).text for lp in self.recognizer.infer(waves)]

    def close(self) -> None:
        del self.recognizer


def factories() -> dict[str, Callable[[argparse.Namespace], OurModel]]:
    """Systems ``ours-attention``, ``ours-greedy`` and ``ours-beam`` on ``--model`` as the server runs
    them (on the CPU: ONNX Runtime, the slim path, int8), the same in fp32 (``-fp32``: the CTC
    network and the second pass), and on PyTorch (``-torch``, fp32)."""
    systems: dict[str, Callable[[argparse.Namespace], OurModel]] = {}
    for decoder in ("attention", "greedy", "beam"):
        systems[f"ours-{decoder}"] = partial(_our_model, decoder=decoder)
        systems[f"ours-{decoder}-fp32"] = partial(_our_model, decoder=decoder, precision="fp32")
        systems[f"ours-{decoder}-torch"] = partial(_our_model, decoder=decoder, runtime="torch")
    return systems


def _our_model(args: argparse.Namespace, decoder: str, runtime: str = "auto", precision: str = "auto") -> OurModel:
    return OurModel(args.model, decoder, args.threads, runtime, precision)
