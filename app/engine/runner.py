"""The model runner: model batches on ``model_workers`` threads; a small pool decodes their outputs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from app.asr.align import SecondPassOutput
from app.asr.recognizer import Recognizer

logger = logging.getLogger(__name__)

T = TypeVar("T")


class ModelRunner:
    """Runs model batches on ``model_workers`` threads and decoding on ``decode_threads`` others,
    so decoding one batch overlaps the network's work on the next, all off the event loop.

    With several model workers the recognizer is called from several threads at once; it keeps
    no state between calls (the frontend and network only read their weights).
    """

    def __init__(self, recognizer: Recognizer, decode_threads: int = 1, model_workers: int = 1) -> None:
        self.recognizer = recognizer
        self._model = ThreadPoolExecutor(max_workers=model_workers, thread_name_prefix="model")
        self._decode = ThreadPoolExecutor(max_workers=decode_threads, thread_name_prefix="decode")

    async def infer(self, waveforms: Sequence[np.ndarray]) -> list[np.ndarray]:
        """(frames, vocab) log-probs per waveform, computed on the model thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._model, self.recognizer.infer, list(waveforms))

    async def second_pass(self, waveforms: Sequence[np.ndarray]) -> list[SecondPassOutput]:
        """CTC log-probs and the second pass's text per waveform, computed on the model thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._model, self.recognizer.second_pass, list(waveforms))

    async def decode(self, fn: Callable[..., T], *args: object) -> T:
        """Run a decoding function on the decode pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._decode, fn, *args)

    def warmup(
        self, sample_rate: int, batch_sizes: Sequence[int] = (1, 4), seconds: Sequence[float] = (1.0, 5.0)
    ) -> None:
        """Run a few dummy batches of common shapes (blocking; call from a worker thread)."""
        rng = np.random.default_rng(0)
        for size in batch_sizes:
            for duration in seconds:
                batch = [0.01 * rng.standard_normal(int(duration * sample_rate)).astype(np.float32)] * size
                self._model.submit(self.recognizer.infer, batch).result()

    def warmup_second_pass(self, sample_rate: int, seconds: float = 2.0) -> None:
        """Run the second pass once on a short noise clip (blocking; call from a worker thread)."""
        noise = 0.01 * np.random.default_rng(0).standard_normal(int(seconds * sample_rate)).astype(np.float32)
        self._model.submit(self.recognizer.second_pass, [noise]).result()

    def close(self) -> None:
        self._model.shutdown(wait=True)
        self._decode.shutdown(wait=True)
