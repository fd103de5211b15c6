"""The engine: loads the model, owns the batcher and runner, and transcribes requests.

Its lifecycle is ``loading -> ready -> draining -> stopped`` (or ``failed``). Routers only
call :meth:`Engine.transcribe` and read :attr:`Engine.state`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np

from app.asr.bundle import load_bundle
from app.asr.configs import BundleConfig
from app.asr.ctc import GreedyDecoder, Hypothesis
from app.asr.recognizer import Recognizer, TorchRecognizer
from app.asr.segment import split_points, stitch
from app.config import Settings
from app.engine.batcher import Batcher, BatchLimits
from app.engine.runner import ModelRunner
from app.metrics import Metrics

logger = logging.getLogger(__name__)

RecognizerFactory = Callable[[Settings], Recognizer]
T = TypeVar("T")


class Decoder(Protocol):
    """Turns one piece's (frames, vocab) log-probs into a hypothesis."""

    def decode(self, log_probs: np.ndarray, time_offset: float = 0.0) -> Hypothesis: ...


class EngineState(enum.StrEnum):
    LOADING = "loading"
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"
    FAILED = "failed"


class EngineUnavailable(Exception):
    """The engine cannot take work now (loading, draining, stopped or failed)."""


class RequestTimeout(Exception):
    """A request's inference did not finish within its deadline."""


def load_recognizer(settings: Settings) -> Recognizer:
    """The default factory: load the bundle at ``settings.model_path`` for PyTorch inference."""
    import torch

    if settings.num_threads:
        torch.set_num_threads(settings.num_threads)
    bundle = load_bundle(settings.model_path)
    return TorchRecognizer(bundle, device=settings.device, precision=settings.precision)


@dataclass
class Transcript:
    """A request's result: the stitched hypothesis and the audio duration."""

    hypothesis: Hypothesis
    duration: float


class Engine:
    """Owns the recognizer, its runner thread and the batcher."""

    def __init__(self, settings: Settings, metrics: Metrics, factory: RecognizerFactory = load_recognizer) -> None:
        self.settings = settings
        self.metrics = metrics
        self._factory = factory
        self.state = EngineState.LOADING
        self.recognizer: Recognizer | None = None
        self._runner: ModelRunner | None = None
        self._batcher: Batcher[np.ndarray] | None = None
        self._decoder: GreedyDecoder | None = None
        self.error: str | None = None

    @property
    def ready(self) -> bool:
        return self.state is EngineState.READY

    @property
    def greedy_decoder(self) -> GreedyDecoder:
        """The default decoder for the loaded model."""
        if self._decoder is None:
            raise EngineUnavailable("the model is not loaded yet")
        return self._decoder

    async def run_decoder(self, fn: Callable[..., T], *args: object) -> T:
        """Run a (CPU-heavy) decoding function on the decode pool, off the event loop."""
        if self._runner is None:
            raise EngineUnavailable("the model is not loaded yet")
        return await self._runner.decode(fn, *args)

    async def infer(self, audio: np.ndarray, priority: int = 0) -> np.ndarray:
        """Log-probs (frames, vocab) of one piece of audio through the batcher (no cutting)."""
        self.model_config()
        return await self.batcher.submit(audio, priority)

    def model_config(self) -> BundleConfig:
        """The served model's config; raises :class:`EngineUnavailable` unless taking work now."""
        if not self.ready or self.recognizer is None:
            raise EngineUnavailable(f"the service is {self.state.value}")
        return self.recognizer.config

    @property
    def batcher(self) -> Batcher[np.ndarray]:
        if self._batcher is None:
            raise EngineUnavailable("the model is not loaded yet")
        return self._batcher

    async def start(self) -> None:
        """Load and warm the model on a worker thread, then start the batcher."""
        started = time.monotonic()
        try:
            recognizer = await asyncio.to_thread(self._factory, self.settings)
            runner = ModelRunner(recognizer)
            if self.settings.warmup:
                await asyncio.to_thread(runner.warmup, recognizer.config.sample_rate)
        except Exception as exc:
            self.state = EngineState.FAILED
            self.error = str(exc)
            logger.exception("model failed to load from %s", self.settings.model_path)
            raise
        self.recognizer, self._runner = recognizer, runner
        config = recognizer.config
        self._decoder = GreedyDecoder(config.tokens, config.blank_id, config.frame_seconds, config.word_delimiter)
        self._batcher = Batcher(
            runner.infer, self._limits(recognizer.config.sample_rate), recognizer.config.sample_rate, self.metrics
        )
        self._batcher.start()
        if self.state is EngineState.LOADING:
            self.state = EngineState.READY
            self.metrics.model_ready.set(1)
        logger.info(
            "model %s ready on %s/%s in %.1f s",
            recognizer.config.name,
            recognizer.device,
            recognizer.precision,
            time.monotonic() - started,
        )

    def _limits(self, sample_rate: int) -> BatchLimits:
        s = self.settings
        return BatchLimits(
            max_batch_size=s.max_batch_size,
            max_wait_s=s.max_wait_ms / 1000,
            max_batch_samples=int(s.max_batch_audio_seconds * sample_rate),
            max_queue_samples=int(s.max_queue_audio_seconds * sample_rate),
        )

    def begin_drain(self) -> None:
        """Refuse new work from now on; work already accepted still completes."""
        if self.state in (EngineState.LOADING, EngineState.READY):
            self.state = EngineState.DRAINING
            self.metrics.model_ready.set(0)
            logger.info("draining: new work is refused")

    async def stop(self) -> None:
        """Drain accepted work, then stop the batcher and the runner thread."""
        self.begin_drain()
        if self._batcher is not None:
            await self._batcher.stop()
        if self._runner is not None:
            await asyncio.to_thread(self._runner.close)
        self.state = EngineState.STOPPED
        self.metrics.model_ready.set(0)

    async def transcribe(self, audio: np.ndarray, decoder: Decoder | None = None) -> Transcript:
        """Transcribe mono float32 audio at the model's rate; long audio is cut and stitched.

        ``decoder`` turns each piece's log-probs into a hypothesis (default: greedy).

        Raises :class:`EngineUnavailable` unless ready, ``QueueFull`` past the queue limit and
        :class:`RequestTimeout` past ``request_timeout_s``.
        """
        rate = self.model_config().sample_rate
        starts = split_points(audio, rate, self.settings.chunk_seconds)
        bounds = [*starts[1:], audio.shape[0]]
        futures: list[asyncio.Future[np.ndarray]] = []
        try:
            for start, end in zip(starts, bounds, strict=True):
                futures.append(self.batcher.submit(audio[start:end]))
            async with asyncio.timeout(self.settings.request_timeout_s):
                log_probs = await asyncio.gather(*futures)
                chosen = decoder or self.greedy_decoder
                pieces = await self.run_decoder(lambda: [chosen.decode(lp) for lp in log_probs])
        except TimeoutError as exc:
            for future in futures:
                future.cancel()
            raise RequestTimeout(f"transcription did not finish within {self.settings.request_timeout_s:g} s") from exc
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        hypothesis = stitch(list(pieces), [s / rate for s in starts])
        return Transcript(hypothesis=hypothesis, duration=audio.shape[0] / rate)
