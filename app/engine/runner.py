"""The model runner: one dedicated thread owns the recognizer and runs every batch."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from app.asr.ctc import Hypothesis
from app.asr.recognizer import Recognizer

logger = logging.getLogger(__name__)


class ModelRunner:
    """Runs recognizer calls on a single worker thread, off the event loop."""

    def __init__(self, recognizer: Recognizer) -> None:
        self.recognizer = recognizer
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")

    async def transcribe(self, waveforms: Sequence[np.ndarray]) -> list[Hypothesis]:
        """Transcribe a batch on the model thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.recognizer.transcribe, list(waveforms))

    def warmup(
        self, sample_rate: int, batch_sizes: Sequence[int] = (1, 4), seconds: Sequence[float] = (1.0, 5.0)
    ) -> None:
        """Run a few dummy batches of common shapes (blocking; call from a worker thread)."""
        rng = np.random.default_rng(0)
        for size in batch_sizes:
            for duration in seconds:
                batch = [0.01 * rng.standard_normal(int(duration * sample_rate)).astype(np.float32)] * size
                self._executor.submit(self.recognizer.transcribe, batch).result()

    def close(self) -> None:
        self._executor.shutdown(wait=True)
