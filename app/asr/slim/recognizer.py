"""The recognizer of a Whisper bundle without PyTorch: NumPy log-mel, ONNX Runtime networks.

The CTC network and the second pass are ONNX graphs assembled from the base's and the bundle's
weights at load time (``app.asr.slim.graphs``), so the slim install needs no exported file and
no PyTorch. Transcripts equal the PyTorch path's (``tests/unit/test_slim_recognizer.py``).
It keeps no state between calls (it only reads its weights), so the engine's model workers call
it from several threads at once, and a CTC batch may run inside a second pass's ``pause``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from app.asr.align import SecondPassOutput
from app.asr.configs import BundleConfig, WhisperCTCConfig, WhisperFrontendConfig
from app.asr.onnx_int8 import quantize_onnx_integer
from app.asr.slim.bundle import load_whisper_bundle
from app.asr.slim.frontend import NumpyWhisperLogMel
from app.asr.slim.graphs import ctc_network
from app.asr.slim.second_pass import SECOND_PASS_PRECISION, SlimSecondPass
from app.asr.slim.sessions import OnnxCtcNetwork
from app.asr.whisper.base import base_file, load_base
from app.asr.whisper.joint import joint_decoding

if TYPE_CHECKING:
    from app.asr.bundle import Bundle

logger = logging.getLogger(__name__)


def ctc_graph(
    base: dict[str, np.ndarray], trained: dict[str, np.ndarray], network: WhisperCTCConfig, precision: str
) -> bytes:
    """The CTC network as served in ``precision``: ``fp32``, or ``int8``: integer matrix products
    with one weight scale per output channel, the small CTC head in float32. On 10 s clips int8
    takes 0.49x the time of fp32 at a mean greedy dev WER of 51.96 % against 51.82 %; per-tensor
    scales or an integer head lost up to 1.1 points on one dev set (``python -m bench.int8 ctc``,
    docs/benchmarks.md)."""
    graph = ctc_network(base, trained, network)
    return quantize_onnx_integer(graph, per_channel=True, float_weights=("head.",)) if precision == "int8" else graph


class SlimRecognizer:
    """A Whisper bundle on ONNX Runtime (CPU): the CTC network and the second pass each in fp32 or
    with integer matrix products (``precision``, ``second_pass_precision``)."""

    device = "cpu"
    runtime = "onnx"

    def __init__(
        self,
        config: BundleConfig,
        trained: dict[str, np.ndarray],
        precision: str = "fp32",
        num_threads: int = 0,
        spin_wait: bool = False,
        pads_batches: bool = False,
        bundle_path: Path | None = None,
        second_pass_beams: int | None = None,
        second_pass_precision: str = SECOND_PASS_PRECISION,
    ) -> None:
        network = config.model
        if not isinstance(network, WhisperCTCConfig) or not isinstance(config.frontend, WhisperFrontendConfig):
            raise TypeError(f"model {config.name} is not a Whisper network")
        if precision not in ("fp32", "int8"):
            raise ValueError(f"precision {precision} is not served by ONNX Runtime (fp32 or int8)")
        self.config = config
        self.bundle_path = Path(bundle_path) if bundle_path is not None else None
        self.precision = precision
        self.second_pass_precision = second_pass_precision
        self.pads_batches = pads_batches
        _, base = load_base(base_file(network.base))
        graph = ctc_graph(base, trained, network, precision)
        self.network = OnnxCtcNetwork(graph, num_threads, spin_wait)
        self.frontend = NumpyWhisperLogMel(config.frontend)
        self.passes = SlimSecondPass.from_base(network, num_threads, second_pass_precision, trained)
        self.passes.joint = joint_decoding(config, self.passes.tokenizer, second_pass_beams)
        encoder = sum(v.size for k, v in base.items() if k.startswith("encoder.") and k != "encoder.positions")
        self._parameters = encoder + sum(v.size for k, v in trained.items() if k.startswith("head."))
        logger.debug(
            "slim recognizer built: precision=%s, second pass %s, threads=%d",
            precision,
            second_pass_precision,
            num_threads,
        )

    @classmethod
    def load(
        cls,
        path: Path | str,
        precision: str = "fp32",
        num_threads: int = 0,
        spin_wait: bool = False,
        pads_batches: bool = False,
        second_pass_beams: int | None = None,
        second_pass_precision: str = SECOND_PASS_PRECISION,
    ) -> SlimRecognizer:
        """The bundle folder ``path`` (checked as :func:`app.asr.slim.bundle.load_whisper_bundle` does);
        ``second_pass_beams`` overrides its ``ctc_beams``."""
        config, _, trained = load_whisper_bundle(path)
        return cls(
            config,
            trained,
            precision,
            num_threads,
            spin_wait,
            pads_batches,
            Path(path),
            second_pass_beams,
            second_pass_precision,
        )

    @classmethod
    def from_bundle(
        cls,
        bundle: Bundle,
        precision: str = "fp32",
        num_threads: int = 0,
        spin_wait: bool = False,
        pads_batches: bool = False,
    ) -> SlimRecognizer:
        """A bundle already loaded as PyTorch modules (its trained weights, as they are now)."""
        from app.asr.whisper.model import WhisperCTC  # PyTorch is there: the bundle is made of its modules

        model = bundle.model
        if not isinstance(model, WhisperCTC):
            raise TypeError(f"model {bundle.name} is not a Whisper network")
        trained = {k: v.detach().cpu().float().numpy() for k, v in model.trained_state().items()}
        if bundle.second_pass is not None:
            trained |= bundle.second_pass.adapter
        joint = bundle.second_pass.joint if bundle.second_pass is not None else None
        beams = joint.beams if joint is not None else None  # as the bundle was loaded
        return cls(bundle.config, trained, precision, num_threads, spin_wait, pads_batches, bundle.path, beams)

    def num_parameters(self) -> int:
        return self._parameters

    @property
    def has_second_pass(self) -> bool:
        return True

    def infer(self, waveforms: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Per-utterance (frames, vocab) float32 log-probs, one batch or item by item (``pads_batches``)."""
        if not waveforms:
            return []
        if not self.pads_batches and len(waveforms) > 1:
            return [self._log_probs(*self._features([wave]))[0] for wave in waveforms]
        return self._log_probs(*self._features(waveforms))

    def second_pass(
        self, waveforms: Sequence[np.ndarray], pause: Callable[[], None] = lambda: None, prompt: str = ""
    ) -> list[SecondPassOutput]:
        """Each waveform's CTC log-probs (for word times) and the second pass's text, in one batch.

        Each waveform must be at most 30 s (the engine cuts longer audio into pieces). ``pause`` is
        called between steps: after each item's CTC pass, the encoder and each decoder step.
        ``prompt``: text the second pass reads as what came before, for every waveform.
        """
        if not waveforms:
            return []
        features, frame_lengths = self._features(waveforms)  # one log-mel for both passes
        if self.pads_batches or len(waveforms) == 1:
            log_probs = self._log_probs(features, frame_lengths)
        else:  # item by item at each item's own length, as infer() runs them
            log_probs = []
            for row, n in enumerate(frame_lengths.tolist()):
                log_probs.append(self._log_probs(features[row : row + 1, :, :n], frame_lengths[row : row + 1])[0])
                pause()
        texts = self.passes.transcribe(features, frame_lengths, log_probs, pause, prompt)
        return [SecondPassOutput(lp, text) for lp, text in zip(log_probs, texts, strict=True)]

    def _features(self, waveforms: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        lengths = np.array([w.shape[0] for w in waveforms], dtype=np.int64)
        batch = np.zeros((len(waveforms), int(lengths.max())), dtype=np.float32)
        for row, wave in enumerate(waveforms):
            batch[row, : wave.shape[0]] = wave
        return self.frontend(batch, lengths)

    def _log_probs(self, features: np.ndarray, frame_lengths: np.ndarray) -> list[np.ndarray]:
        log_probs, out_lengths = self.network(np.ascontiguousarray(features), frame_lengths)
        return [log_probs[row, :n] for row, n in enumerate(out_lengths.tolist())]
