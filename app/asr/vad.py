"""Voice activity detection with Silero VAD (MIT), run by ONNX Runtime.

The model ships inside the ``silero-vad`` wheel; its file is found without importing that
package (whose ``__init__`` imports torch). Of the wheel's ONNX exports this uses
``silero_vad_16k_sequence.onnx``: the same network as the streaming ``silero_vad.onnx``, with
its LSTM state as explicit ``h``/``c`` inputs and outputs, that scores any number of 32 ms
frames in one call. Its probabilities equal the streaming model's frame by frame (checked in
``tests/unit/test_vad.py``), and a call per piece of stream audio costs about half as much per
frame as a call per frame (docs/benchmarks.md, "Endpointing").

Each frame is 512 samples at 16 kHz, preceded by the last 64 samples of the frame before it
(zeros for the first): the model's input is ``(frames, 576)``, its output one speech probability
per frame. One ONNX session per process serves every stream (one intra-op thread, so a stream's
scoring never fans out over the cores the acoustic model uses); each :class:`SileroVad` holds
its own state.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import onnxruntime as ort

SAMPLE_RATE = 16000
FRAME = 512  # samples per scored frame (32 ms)
CONTEXT = 64  # samples of the previous frame each frame is scored with
HYSTERESIS = 0.15  # speech ends below threshold - this (as Silero's own iterator does)
MODEL_FILE = "silero_vad_16k_sequence.onnx"
BLOCK_FRAMES = 1024  # frames per call when scoring a whole recording (33 s; input 2.4 MB)
_HIDDEN = (1, 1, 128)
_EMPTY = np.zeros(0, dtype=np.float32)


class VadUnavailable(RuntimeError):
    """The Silero model file is not installed."""


def model_path() -> Path:
    """The ONNX file inside the installed ``silero-vad`` wheel (its package is not imported)."""
    spec = importlib.util.find_spec("silero_vad")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        path = Path(folder) / "data" / MODEL_FILE
        if path.is_file():
            return path
    raise VadUnavailable(
        f"Silero VAD needs {MODEL_FILE} from the silero-vad package: install it, or set ASR_STREAM_VAD=energy"
    )


@functools.cache
def shared_session() -> ort.InferenceSession:
    """The process's one Silero session (ONNX Runtime sessions are safe to call from many threads)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # the export carries unused initializers ORT warns about
    return ort.InferenceSession(str(model_path()), sess_options=options, providers=["CPUExecutionProvider"])


class SileroVad:
    """Speech probabilities of a live signal, 32 ms frame by frame, with the model's state kept.

    Feed 16 kHz float32 audio in pieces of any size; each call scores the whole frames it
    completes. Samples short of a frame wait for the next piece.
    """

    def __init__(self, session: ort.InferenceSession | None = None) -> None:
        self._session = session or shared_session()
        self._h = np.zeros(_HIDDEN, dtype=np.float32)
        self._c = np.zeros(_HIDDEN, dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._rest = _EMPTY

    def probabilities(self, samples: np.ndarray) -> np.ndarray:
        """The speech probability, in [0, 1], of each frame completed by ``samples``: ``(frames,)``."""
        data = np.concatenate([self._rest, samples]) if self._rest.size else samples
        n = data.shape[0] // FRAME
        self._rest = data[n * FRAME :].astype(np.float32, copy=True)
        if n == 0:
            return _EMPTY
        frames = np.ascontiguousarray(data[: n * FRAME], dtype=np.float32).reshape(n, FRAME)
        inputs = np.empty((n, CONTEXT + FRAME), dtype=np.float32)  # (frames, 576)
        inputs[0, :CONTEXT] = self._context
        inputs[1:, :CONTEXT] = frames[:-1, -CONTEXT:]
        inputs[:, CONTEXT:] = frames
        self._context = frames[-1, -CONTEXT:].copy()
        probs, self._h, self._c = self._session.run(
            ["speech_probs", "hn", "cn"], {"input": inputs, "h": self._h, "c": self._c}
        )
        return np.asarray(probs, dtype=np.float32).reshape(n)


def installed() -> bool:
    """Whether the Silero model file is installed (the ``silero-vad`` package)."""
    try:
        model_path()
    except VadUnavailable:
        return False
    return True


def recording_speech(audio: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Speech or not per 32 ms frame (:data:`FRAME` samples) of a whole 16 kHz recording: ``(frames,)``
    booleans, with hysteresis (:func:`speech_frames`); a last partial frame is left out.

    The recording is scored :data:`BLOCK_FRAMES` at a time with the state carried over, so the
    model's input stays a few MB however long the recording is; the result equals one call.
    """
    vad, probs = SileroVad(), []
    step = BLOCK_FRAMES * FRAME
    for start in range(0, audio.shape[0], step):
        probs.append(vad.probabilities(audio[start : start + step]))
    speech, _ = speech_frames(np.concatenate(probs) if probs else _EMPTY, threshold)
    return speech


def speech_frames(probs: np.ndarray, threshold: float, speaking: bool = False) -> tuple[np.ndarray, bool]:
    """Per-frame speech decisions from probabilities, with hysteresis.

    Speech starts at a frame at or above ``threshold`` and lasts until one below
    ``threshold - 0.15``. ``speaking`` is the state before the first frame; returns the
    ``(frames,)`` booleans and the state after the last.
    """
    low = threshold - HYSTERESIS
    out = np.empty(probs.shape[0], dtype=bool)
    for i, p in enumerate(probs.tolist()):
        if p >= threshold:
            speaking = True
        elif p < low:
            speaking = False
        out[i] = speaking
    return out, speaking


class SileroGate:
    """Speech or silence by Silero VAD: was speech heard, how long since (as :class:`EnergyGate`).

    ``trailing_silence`` counts whole 32 ms frames; a piece's unfinished frame is judged when
    the next piece completes it.
    """

    def __init__(self, sample_rate: int, threshold: float = 0.5) -> None:
        if sample_rate != SAMPLE_RATE:
            raise ValueError(f"Silero VAD runs at {SAMPLE_RATE} Hz, not {sample_rate}")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"the VAD threshold must lie in (0, 1), not {threshold}")
        self.threshold = threshold
        self.heard_speech = False
        self.trailing_silence = 0  # samples since the last speech frame (or since the start)
        self._vad = SileroVad()
        self._speaking = False

    def feed(self, samples: np.ndarray) -> None:
        probs = self._vad.probabilities(samples)
        if probs.size == 0:
            return
        speech, self._speaking = speech_frames(probs, self.threshold, self._speaking)
        spoken = np.flatnonzero(speech)
        if spoken.size:
            self.heard_speech = True
            self.trailing_silence = (probs.size - 1 - int(spoken[-1])) * FRAME
        else:
            self.trailing_silence += probs.size * FRAME
