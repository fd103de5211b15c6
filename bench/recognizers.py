"""Building the recognizer the way the server does, for the ceiling and the peers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from app.asr.align import AlignedDecoder
from app.asr.bundle_files import read_config
from app.asr.ctc import GreedyDecoder
from app.asr.recognizer import Recognizer, open_recognizer
from app.config import Settings
from app.engine.plan import Machine, plan_hardware
from app.process import tune_malloc

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "en-whisper-tiny"


def make_recognizer(
    model: Path,
    runtime: str = "auto",
    precision: str = "auto",
    device: str = "cpu",
    num_threads: int = 0,
    batch_execution: str = "auto",
    second_pass_precision: str = "auto",
) -> Recognizer:
    """The bundle at ``model`` behind the runtime and precision the server would use for these names
    (resolved by the server's plan, ``app.engine.plan``), in a process whose allocator is tuned as
    the server's is by default (``ASR_TUNE_MALLOC``). ``num_threads`` goes to ONNX Runtime as given
    (0: its default); ``second_pass_precision`` as ``ASR_SECOND_PASS_PRECISION``."""
    tune_malloc()
    named = {"device": device, "runtime": runtime, "precision": precision, "batch_execution": batch_execution}
    hardware = plan_hardware(Settings.model_validate(named), Machine.detect())
    network = read_config(model).model.type
    return open_recognizer(
        model,
        runtime=hardware.runtime_for(network),
        device=hardware.device,
        precision=hardware.precision_for(network),
        num_threads=num_threads,
        pads_batches=hardware.pads_batches,
        second_pass_precision=second_pass_precision,
    )


def describe(recognizer: Recognizer) -> dict[str, Any]:
    """Which runtime, precision and device a recognizer resolved to (for the results)."""
    return {
        "class": type(recognizer).__name__,
        "runtime": getattr(recognizer, "runtime", "torch"),
        "precision": recognizer.precision,
        "second_pass_precision": getattr(recognizer, "second_pass_precision", None),
        "device": recognizer.device,
        "batches": "padded" if getattr(recognizer, "pads_batches", True) else "per item",
        "parameters": recognizer.num_parameters(),
    }


def greedy_decoder(recognizer: Recognizer) -> GreedyDecoder:
    config = recognizer.config
    return GreedyDecoder(config.tokens, config.blank_id, config.frame_seconds, config.word_delimiter)


def aligned_decoder(recognizer: Recognizer) -> AlignedDecoder:
    """Word times for the second pass's text by CTC forced alignment, as the server's ``attention`` decoder."""
    config = recognizer.config
    return AlignedDecoder(config.tokens, config.blank_id, config.frame_seconds, config.word_delimiter)


def warm_up(
    recognizer: Recognizer, seconds: tuple[float, ...] = (1.0, 5.0), batch_sizes: tuple[int, ...] = (1, 4)
) -> None:
    """The server's warm-up shapes, so the peers start as warm as ours."""
    rng = np.random.default_rng(0)
    rate = recognizer.config.sample_rate
    for size in batch_sizes:
        for duration in seconds:
            recognizer.infer([0.01 * rng.standard_normal(int(duration * rate)).astype(np.float32)] * size)
