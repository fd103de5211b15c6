"""The PyTorch recognizer: a batch of waveforms in, per-utterance CTC log-probabilities out.

It glues the bundle's PyTorch frontend and acoustic model, and owns device and precision
choices. It serves every network on CUDA and the convolutional ``sepconv_ctc`` on CPU; a
Whisper network's ONNX Runtime path needs no PyTorch (``app.asr.slim``). It is not
thread-safe: the engine calls it from one thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from app.asr.align import SecondPassOutput
from app.asr.bundle import Bundle
from app.asr.model import SepConvCTC
from app.asr.onnx_int8 import quantize_onnx_int8
from app.asr.recognizer import Recognizer
from app.asr.runtimes import OnnxNetwork, export_onnx, inference_copy
from app.asr.whisper.model import WhisperCTC

logger = logging.getLogger(__name__)

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def build_recognizer(
    bundle: Bundle,
    runtime: str = "torch",
    device: str = "cpu",
    precision: str = "fp32",
    num_threads: int = 0,
    spin_wait: bool = False,
    pads_batches: bool = True,
) -> Recognizer:
    """A recognizer for ``bundle`` on the given runtime, device and precision, as resolved by the
    serving plan (``app.engine.plan``: no ``auto`` here).

    ``torch``: eager PyTorch with batch norms folded; ``compile``: the same through
    ``torch.compile``; ``onnx``: the network exported to ONNX and run by ONNX Runtime (``int8``
    stores its weights as int8, one scale per output channel; ``num_threads``: its threads, 0 for
    its default; ``spin_wait`` lets its threads spin between operators). ``pads_batches``: a batch
    runs as one padded tensor, else item by item.
    """
    model = bundle.model
    if runtime == "onnx" and isinstance(model, WhisperCTC):  # built from the weights, as without PyTorch
        from app.asr.slim.recognizer import SlimRecognizer

        return SlimRecognizer.from_bundle(bundle, precision, num_threads, spin_wait, pads_batches)
    network: Network
    if runtime == "onnx" and isinstance(model, SepConvCTC):
        onnx_model = export_onnx(model)
        if precision == "int8":
            onnx_model = quantize_onnx_int8(onnx_model)
        network = OnnxNetwork(onnx_model, num_threads, spin_wait)
    else:
        folded = inference_copy(bundle.model).to(device)
        network = torch.compile(folded, dynamic=True) if runtime == "compile" else folded
    logger.debug("recognizer built: runtime=%s device=%s precision=%s", runtime, device, precision)
    return TorchRecognizer(bundle, device, precision, network=network, runtime=runtime, pads_batches=pads_batches)


Network = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


class TorchRecognizer:
    """Inference of a loaded :class:`Bundle`: the PyTorch frontend, then ``network``.

    ``network`` defaults to the bundle's own eager model; :func:`build_recognizer` passes a
    batch-norm-folded, compiled or ONNX Runtime network instead. With ``pads_batches`` a batch
    runs as one zero-padded tensor; without, item by item at each item's own length.
    """

    def __init__(
        self,
        bundle: Bundle,
        device: str = "cpu",
        precision: str = "fp32",
        network: Network | None = None,
        runtime: str = "torch",
        pads_batches: bool = True,
    ) -> None:
        self.bundle = bundle
        self.bundle_path: Path | None = bundle.path
        self.config = bundle.config
        self.device = device
        self.precision = precision
        self.runtime = runtime
        self.pads_batches = pads_batches
        self.frontend = bundle.frontend.to(self.device).eval()
        self.model: Network = network if network is not None else bundle.model.to(self.device).eval()
        if bundle.second_pass is not None:
            bundle.second_pass.to(self.device)

    def num_parameters(self) -> int:
        return self.bundle.num_parameters()

    @property
    def has_second_pass(self) -> bool:
        """Whether the bundle has a second pass (Whisper's pretrained decoder)."""
        return self.bundle.second_pass is not None

    @torch.inference_mode()
    def second_pass(
        self, waveforms: Sequence[np.ndarray], pause: Callable[[], None] = lambda: None, prompt: str = ""
    ) -> list[SecondPassOutput]:
        """Each waveform's CTC log-probs (for word times) and the second pass's text, in one batch.

        Each waveform must be at most 30 s (the engine cuts longer audio into pieces). ``pause`` is
        called once, between the CTC pass and the second (the ONNX path pauses at every decoder step).
        ``prompt``: text the second pass reads as what came before, for every waveform.
        """
        passes = self.bundle.second_pass
        if passes is None:
            raise RuntimeError(f"model {self.config.name} has no second pass")
        if not waveforms:
            return []
        batch, lengths = pad_batch(waveforms, self.device)
        features, frame_lengths = self.frontend(batch, lengths)  # one log-mel for both passes
        if self.pads_batches or len(waveforms) == 1:
            log_probs = rows(*self.network(features, frame_lengths))
        else:  # item by item at each item's own length, as infer() runs them
            log_probs = [
                rows(*self.network(features[row : row + 1, :, :n].contiguous(), frame_lengths[row : row + 1]))[0]
                for row, n in enumerate(frame_lengths.tolist())
            ]
        pause()
        with self._autocast():
            texts = passes.transcribe(features, frame_lengths, log_probs, prompt)
        return [SecondPassOutput(lp, text) for lp, text in zip(log_probs, texts, strict=True)]

    @torch.inference_mode()
    def infer(self, waveforms: Sequence[np.ndarray]) -> list[np.ndarray]:
        if not waveforms:
            return []
        if not self.pads_batches and len(waveforms) > 1:
            return [self._infer_padded([wave])[0] for wave in waveforms]
        return self._infer_padded(waveforms)

    def _infer_padded(self, waveforms: Sequence[np.ndarray]) -> list[np.ndarray]:
        batch, lengths = pad_batch(waveforms, self.device)
        return rows(*self.forward(batch, lengths))

    def forward(self, batch: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(batch, samples) audio -> (batch, frames, vocab) log-probs and frame lengths."""
        return self.network(*self.frontend(batch, lengths))

    def network(self, features: Tensor, frame_lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(batch, n_mels, frames) features -> (batch, frames_out, vocab) log-probs and lengths, at the precision."""
        with self._autocast():
            return self.model(features, frame_lengths)

    def _autocast(self) -> AbstractContextManager[object]:
        dtype = _DTYPES.get(self.precision)
        return torch.autocast(self.device, dtype=dtype) if dtype is not None else nullcontext()


def rows(log_probs: Tensor, out_lengths: Tensor) -> list[np.ndarray]:
    """Each row's (frames, vocab) float32 log-probs, cut to its length."""
    log_probs_np = log_probs.float().cpu().numpy()
    return [log_probs_np[row, :n] for row, n in enumerate(out_lengths.tolist())]


def pad_batch(waveforms: Sequence[np.ndarray], device: str = "cpu") -> tuple[Tensor, Tensor]:
    """Stack mono waveforms into a zero-padded (batch, samples) tensor plus lengths."""
    lengths = torch.tensor([w.shape[0] for w in waveforms], dtype=torch.long)
    if len(waveforms) == 1 and device == "cpu":  # nothing to pad: the samples themselves, not a copy
        return torch.from_numpy(np.ascontiguousarray(waveforms[0], dtype=np.float32))[None], lengths
    batch = torch.zeros(len(waveforms), int(lengths.max()), dtype=torch.float32)
    for row, wave in enumerate(waveforms):
        batch[row, : wave.shape[0]] = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    if device != "cpu":
        batch = batch.pin_memory().to(device, non_blocking=True)
        lengths = lengths.to(device)
    return batch, lengths
