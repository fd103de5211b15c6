"""This server's recognizers as systems of ``bench.peers_accuracy``: the second pass, and the CTC path
greedy or with beam search and the LM, on any runtime and precision, built as the server builds them."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from app.asr.beam import BeamDecoder, load_lexicon_lm
from app.asr.bundle_files import LM_FOLDER
from app.asr.ctc import GreedyDecoder
from app.asr.segment import cut_pieces
from app.config import Settings
from app.engine.engine import piece_seconds
from app.engine.plan import resolve_split
from bench.recognizers import aligned_decoder, make_recognizer

DEFAULT_BUNDLE = Path(__file__).resolve().parent.parent / "models" / "en-whisper-tiny"
CHUNK_SECONDS: float = Settings.model_fields["chunk_seconds"].default
SPLITS = ("auto", "pauses", "length")  # ASR_SPLIT (Silero VAD is a dependency: auto is pauses for the CTC path)


def engine_pieces(
    wave: np.ndarray, rate: int, second_pass: bool = True, split: str = "auto", shortest: float | None = None
) -> list[np.ndarray]:
    """``wave`` cut where the server, with its default settings and ``ASR_SPLIT=split``, cuts it
    for the second pass (``second_pass``) or for the CTC path (``shortest``: another shortest piece
    at pauses than the server's, to measure others)."""
    longest, served = piece_seconds(CHUNK_SECONDS, second_pass)
    at_pauses = resolve_split(split, True, rate, second_pass) == "pauses"
    spans = cut_pieces(wave, rate, longest, at_pauses, served if shortest is None else shortest)
    return [wave[start:end] for start, end in spans]


class OurModel:
    """A bundle behind the server's recognizer, decoded one way (``attention``, ``greedy`` or ``beam``)."""

    def __init__(
        self,
        model: Path,
        decoder: str,
        threads: int,
        runtime: str = "auto",
        precision: str = "auto",
        split: str = "auto",
    ) -> None:
        second = "fp32" if precision == "fp32" and runtime != "torch" else "auto"
        self.recognizer = make_recognizer(
            model, runtime=runtime, precision=precision, num_threads=threads, second_pass_precision=second
        )
        config = self.recognizer.config
        suffix = ("-fp32" if precision == "fp32" else "") + ("-torch" if runtime == "torch" else "")
        self.name = f"ours-{decoder}{suffix}"
        self.rate = config.sample_rate
        self.decoder = decoder
        self.split = split
        self.shortest: float | None = None  # the server's shortest piece at pauses, unless set
        self.aligner = aligned_decoder(self.recognizer)
        self.greedy = GreedyDecoder(config.tokens, config.blank_id, config.frame_seconds, config.word_delimiter)
        self.beam: BeamDecoder | None = None
        if decoder == "beam":
            lm = load_lexicon_lm(model / LM_FOLDER, config.tokens, config.blank_id, config.word_delimiter)
            if lm is None:
                raise SystemExit(f"{model} has no lm/ folder for beam search")
            self.beam = BeamDecoder(lm, lm.defaults, config.frame_seconds)

    def transcribe(self, wave: np.ndarray) -> str:
        if self.decoder == "attention":
            return self.second_pass_text(wave)
        return self.ctc_text(wave, self.beam or self.greedy)

    def second_pass_text(self, wave: np.ndarray, prompt: str = "") -> str:
        """The second pass's text of ``wave``, cut as the engine cuts it, each piece reading ``prompt``."""
        return self._second_pass(engine_pieces(wave, self.rate, True, self.split, self.shortest), prompt)

    def ctc_text(self, wave: np.ndarray, decoder: GreedyDecoder | BeamDecoder) -> str:
        """``decoder``'s text of the CTC path's log-probs of ``wave``, cut as the engine cuts it."""
        return self._ctc(engine_pieces(wave, self.rate, False, self.split, self.shortest), decoder)

    def pieces_text(self, pieces: list[np.ndarray]) -> str:
        """The text of ``pieces`` (of at most 25 s) decoded as they are, one after another, joined."""
        if self.decoder == "attention":
            return self._second_pass(pieces, "")
        return self._ctc(pieces, self.beam or self.greedy)

    def _second_pass(self, pieces: list[np.ndarray], prompt: str) -> str:
        outputs = self.recognizer.second_pass(pieces, prompt=prompt)
        return " ".join(self.aligner.align(out).text for out in outputs).strip()

    def _ctc(self, pieces: list[np.ndarray], decoder: GreedyDecoder | BeamDecoder) -> str:
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
    return OurModel(args.model, decoder, args.threads, runtime, precision, getattr(args, "split", "auto"))
