"""The default bundle served on CUDA in fp16 with padded batches says what fp32 on the CPU says.

Both recognizers are built as the server builds them (the serving plan's hardware step, then the
shipped loader) from settings alone: ``device=cuda precision=fp16 batch_execution=padded`` against
``device=cpu precision=fp32 batch_execution=per_item``. The GPU runs the clips (of different
lengths) as one zero-padded batch, the CPU one by one at their own lengths, so the check covers
half precision and padding together. Tolerances: the CTC head's greedy transcripts may differ by
at most :data:`MAX_WER` (a token flipped where two are near-tied in fp16), the best path's mean
log-probability per frame by at most :data:`MAX_LOGPROB_GAP` nats, and the second pass's
transcripts (Whisper's decoder, when the bundle has one) by at most :data:`MAX_WER`.
"""

from __future__ import annotations

import jiwer
import numpy as np
import pytest
import torch

from app.asr.ctc import GreedyDecoder
from app.asr.recognizer import Recognizer
from app.config import Settings
from app.engine.engine import load_recognizer
from app.engine.plan import Machine, plan_hardware
from tests.support import cv100_clips

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: padded fp16 batches run on CUDA only"),
]

CLIPS = 6
MAX_WER = 0.05
"""Word error rate of the fp16 transcripts against the fp32 ones, over all clips."""
MAX_LOGPROB_GAP = 0.05
"""Nats per frame between the two best paths' mean log-probabilities, per clip."""

GPU = Settings(device="cuda", precision="fp16", batch_execution="padded")
CPU = Settings(device="cpu", precision="fp32", batch_execution="per_item")


def served(settings: Settings) -> Recognizer:
    """The recognizer the server builds for ``settings`` (and the plan confirms how it runs)."""
    hardware = plan_hardware(settings, Machine.detect())
    recognizer = load_recognizer(settings, hardware)
    assert (recognizer.device, recognizer.precision) == (settings.device, settings.precision)
    assert recognizer.pads_batches is (settings.batch_execution == "padded")
    return recognizer


def best_path_mean(log_probs: np.ndarray) -> float:
    """Mean over frames of the best token's log-probability; (frames, vocab) in."""
    return float(log_probs.max(axis=1).mean())


def test_padded_fp16_batches_match_fp32_on_cpu() -> None:
    clips = [audio for audio, _ in cv100_clips(CLIPS)]
    assert len({clip.shape[0] for clip in clips}) > 1, "the clips must differ in length to be padded"
    gpu, cpu = served(GPU), served(CPU)
    config = cpu.config
    greedy = GreedyDecoder(config.tokens, config.blank_id, config.frame_seconds, config.word_delimiter)

    half = gpu.infer(clips)  # one padded batch
    full = [cpu.infer([clip])[0] for clip in clips]  # each at its own length
    assert [lp.shape for lp in half] == [lp.shape for lp in full]  # padding adds no frames
    assert all(np.isfinite(lp).all() for lp in half)
    gaps = [abs(best_path_mean(h) - best_path_mean(f)) for h, f in zip(half, full, strict=True)]
    assert max(gaps) <= MAX_LOGPROB_GAP, gaps
    half_text = [greedy.decode(lp).text for lp in half]
    full_text = [greedy.decode(lp).text for lp in full]
    assert all(full_text), full_text  # speech gives words: an empty reference would hide a failure
    assert jiwer.wer(full_text, half_text) <= MAX_WER, list(zip(full_text, half_text, strict=True))

    if gpu.has_second_pass and cpu.has_second_pass:
        half_pass = [out.text for out in gpu.second_pass(clips)]
        full_pass = [cpu.second_pass([clip])[0].text for clip in clips]
        assert all(full_pass), full_pass
        assert jiwer.wer(full_pass, half_pass) <= MAX_WER, list(zip(full_pass, half_pass, strict=True))
