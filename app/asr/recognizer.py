"""The recognizer: a batch of waveforms in, per-utterance CTC log-probabilities out.

:class:`Recognizer` is what the engine needs; :func:`open_recognizer` loads a bundle folder on the
runtime the serving plan chose. Two implementations: ``app.asr.torch_recognizer`` (PyTorch:
CUDA, ``compile``, training) and ``app.asr.slim.recognizer`` (NumPy and ONNX Runtime, no
PyTorch: the CPU path of Whisper networks). Decoding the log-probabilities into text is the
decoders' job (``app.asr.ctc``), so it can run in parallel with the next batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from app.asr.align import SecondPassOutput
from app.asr.configs import BundleConfig


class Recognizer(Protocol):
    """What the engine needs from a speech recognizer."""

    config: BundleConfig
    device: str
    precision: str
    runtime: str
    pads_batches: bool  # False: a batch's items run one by one, unpadded
    bundle_path: Path | None  # the bundle folder it serves (its lm/ folder holds the beam search LM)

    def infer(self, waveforms: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Per-utterance (frames, vocab) float32 log-probs of mono waveforms at ``config.sample_rate``."""
        ...

    def num_parameters(self) -> int:
        """Parameter count of the acoustic model."""
        ...

    @property
    def has_second_pass(self) -> bool:
        """Whether the model has a second pass (Whisper's pretrained decoder)."""
        ...

    def second_pass(
        self, waveforms: Sequence[np.ndarray], pause: Callable[[], None] = lambda: None, prompt: str = ""
    ) -> list[SecondPassOutput]:
        """Each waveform's CTC log-probs and the second pass's text (waveforms of at most 30 s).

        ``pause`` is called between steps of the work; the engine's runner runs waiting CTC
        batches there, so a long second pass does not hold up stream partials. ``prompt``: text
        the second pass reads as what came before (Whisper's previous-text prompt)."""
        ...


def open_recognizer(
    path: Path | str,
    runtime: str,
    device: str = "cpu",
    precision: str = "fp32",
    num_threads: int = 0,
    spin_wait: bool = False,
    pads_batches: bool = True,
    second_pass_beams: int | None = None,
    second_pass_precision: str = "auto",
) -> Recognizer:
    """The bundle folder ``path`` on ``runtime`` (resolved by the serving plan for its network).

    A Whisper network on ``onnx`` loads without PyTorch; every other combination through it.
    ``second_pass_beams`` overrides the bundle's ``ctc_beams`` (its second pass's beam count).
    ``second_pass_precision``: ``int8`` (integer matrix products) or ``fp32`` on ``onnx``; ``auto``
    is the slim second pass's default there, and the network's own precision on PyTorch.
    """
    from app.asr.bundle_files import read_config

    if runtime == "onnx" and read_config(path).model.type == "whisper_ctc":
        from app.asr.slim.recognizer import SlimRecognizer
        from app.asr.slim.second_pass import SECOND_PASS_PRECISION

        second = SECOND_PASS_PRECISION if second_pass_precision == "auto" else second_pass_precision
        return SlimRecognizer.load(path, precision, num_threads, spin_wait, pads_batches, second_pass_beams, second)
    if second_pass_precision not in ("auto", precision):
        raise ValueError(
            f"second-pass precision {second_pass_precision} needs the onnx runtime; on {runtime} the second pass "
            f"runs in the model's precision ({precision})"
        )
    from app.asr.bundle import load_bundle
    from app.asr.torch_recognizer import build_recognizer

    bundle = load_bundle(path, second_pass_beams)
    return build_recognizer(bundle, runtime, device, precision, num_threads, spin_wait, pads_batches)
