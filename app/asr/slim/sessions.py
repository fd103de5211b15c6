"""ONNX Runtime sessions on the CPU (every ONNX network of the server: the slim graphs, and the
convolutional network exported from PyTorch), and the CTC network called with arrays."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort


def cpu_session(onnx_model: bytes, num_threads: int = 0, spin_wait: bool = False) -> ort.InferenceSession:
    """A CPU session of ``onnx_model`` with every graph optimisation (LayerNorm, Gelu and MatMul
    fusions); ``num_threads`` 0 lets ONNX Runtime choose. Threads sleep between runs unless ``spin_wait``."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if num_threads:
        options.intra_op_num_threads = num_threads
    spin = "1" if spin_wait else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spin)
    options.add_session_config_entry("session.inter_op.allow_spinning", spin)
    return ort.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])


class OnnxCtcNetwork:
    """A CTC network in an ONNX Runtime session: inputs ``features`` and ``lengths``, outputs
    ``log_probs`` and ``out_lengths`` (``app.asr.slim.graphs.ctc_network``, ``app.asr.runtimes.export_onnx``)."""

    def __init__(self, onnx_model: bytes, num_threads: int = 0, spin_wait: bool = False) -> None:
        self.session = cpu_session(onnx_model, num_threads, spin_wait)
        self.size_bytes = len(onnx_model)

    def __call__(self, features: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """features (batch, n_mels, frames), zero past each row's ``lengths`` (batch,) ->
        log_probs (batch, ceil(frames / 2), vocab) and out_lengths (batch,)."""
        if features.ndim != 3 or lengths.shape != (features.shape[0],):
            raise ValueError(
                f"features (batch, n_mels, frames) and lengths (batch,), got {features.shape}, {lengths.shape}"
            )
        feeds = {"features": features.astype(np.float32, copy=False), "lengths": lengths.astype(np.int64, copy=False)}
        log_probs, out_lengths = self.session.run(None, feeds)
        return log_probs, out_lengths
