"""The engine: loads the model, owns the batcher and runner, and transcribes requests.

Its lifecycle is ``loading -> ready -> draining -> stopped`` (or ``failed``). Routers only
call :meth:`Engine.transcribe` and read :attr:`Engine.state`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from app.asr.align import AlignedDecoder, SecondPassOutput
from app.asr.beam import BeamDecoder, BeamOptions, LexiconLM, load_lexicon_lm
from app.asr.bundle import load_bundle
from app.asr.configs import BundleConfig
from app.asr.ctc import GreedyDecoder, Hypothesis
from app.asr.recognizer import Recognizer, build_recognizer
from app.asr.segment import split_points, stitch
from app.config import Settings
from app.engine.admission import AudioBudget, Held
from app.engine.batcher import Batcher
from app.engine.plan import HardwarePlan, LoadedModel, Machine, ServingPlan, plan_hardware, plan_serving
from app.engine.runner import ModelRunner
from app.metrics import Metrics
from app.process import tune_process

logger = logging.getLogger(__name__)

RecognizerFactory = Callable[[Settings, HardwarePlan], Recognizer]
"""Loads the model for the settings, on the plan's device, precision and threads."""
T = TypeVar("T")


class CTCDecoder(Protocol):
    """Turns one piece's (frames, vocab) log-probs into a hypothesis."""

    def decode(self, log_probs: np.ndarray, time_offset: float = 0.0) -> Hypothesis: ...


Decoder = CTCDecoder | AlignedDecoder
"""A request's decoder: a CTC decoder (greedy, beam) or the second pass's aligner."""

SECOND_PASS_PIECE_S = 25.0
"""Longest piece the second pass gets (its window is 30 s; pieces are cut at quiet points near the target)."""


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


class NoLanguageModel(Exception):
    """Beam search was asked for, but the served bundle has no language model."""


class NoSecondPass(Exception):
    """The second pass (``decoder=attention``) was asked for, but the served model has none."""


def load_recognizer(settings: Settings, hardware: HardwarePlan) -> Recognizer:
    """The default factory: tune the process for the plan, then load the bundle at
    ``settings.model_path`` on the plan's runtime for its network."""
    tune_process(hardware.num_threads, settings.tune_malloc)
    bundle = load_bundle(settings.model_path)
    return build_recognizer(
        bundle,
        hardware.runtime_for(bundle.config.model.type),
        hardware.device,
        hardware.precision,
        hardware.num_threads,
        settings.spin_wait,
        hardware.pads_batches,
    )


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
        self._second_batcher: Batcher[SecondPassOutput] | None = None
        self._decoder: GreedyDecoder | None = None
        self.lm: LexiconLM | None = None
        self.error: str | None = None
        self._plan: ServingPlan | None = None
        self._uploads = AudioBudget(settings.max_transcribing_audio_seconds)

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

    async def infer(self, audio: np.ndarray, priority: int = 0, *, accepted: bool = False) -> np.ndarray:
        """Log-probs (frames, vocab) of one piece of audio through the batcher (no cutting).

        ``accepted`` marks work of a session taken on before a drain began (a live stream's last
        windows): it still runs while draining, as accepted requests do.
        """
        self.model_config(accepted)
        return await self.batcher.submit(audio, priority)

    def model_config(self, accepted: bool = False) -> BundleConfig:
        """The served model's config; raises :class:`EngineUnavailable` unless taking work now.

        ``accepted`` marks work admitted before a drain began (a request whose upload was under
        way, a live stream's last windows): it still runs while draining.
        """
        taking = self.ready or (accepted and self.state is EngineState.DRAINING)
        if not taking or self.recognizer is None:
            raise EngineUnavailable(f"the service is {self.state.value}")
        return self.recognizer.config

    def holding_upload(self, audio: np.ndarray) -> Held:
        """Hold an upload's decoded audio against ``max_transcribing_audio_seconds`` until released
        (use it as a ``with`` block around the transcription); ``QueueFull`` (429) if it does not fit."""
        return self._uploads.take(audio.shape[0] / self.model_config(accepted=True).sample_rate)

    @property
    def plan(self) -> ServingPlan:
        """How the loaded model is served: every ``auto`` setting resolved (:mod:`app.engine.plan`)."""
        if self._plan is None:
            raise EngineUnavailable("the model is not loaded yet")
        return self._plan

    @property
    def batcher(self) -> Batcher[np.ndarray]:
        if self._batcher is None:
            raise EngineUnavailable("the model is not loaded yet")
        return self._batcher

    @property
    def has_second_pass(self) -> bool:
        """Whether the served model has a second pass (``decoder=attention``)."""
        return self._second_batcher is not None

    @property
    def second_batcher(self) -> Batcher[SecondPassOutput]:
        if self._second_batcher is None:
            raise EngineUnavailable("the model is not loaded yet")
        return self._second_batcher

    async def start(self) -> None:
        """Load and warm the model on a worker thread, then start the batcher."""
        started = time.monotonic()
        try:
            hardware = plan_hardware(self.settings, await asyncio.to_thread(Machine.detect))
            recognizer = await asyncio.to_thread(self._factory, self.settings, hardware)
            lm = await asyncio.to_thread(self._load_lm, recognizer)
            second_pass = bool(getattr(recognizer, "has_second_pass", False))
            facts = LoadedModel(
                device=recognizer.device,
                precision=recognizer.precision,
                runtime=recognizer.runtime,
                pads_batches=recognizer.pads_batches,
                sample_rate=recognizer.config.sample_rate,
                has_second_pass=second_pass,
                has_lm=lm is not None,
            )
            plan = plan_serving(self.settings, hardware, facts)
            runner = ModelRunner(recognizer, model_workers=plan.model_workers)
            if self.settings.warmup:
                await asyncio.to_thread(runner.warmup, recognizer.config.sample_rate)
                if second_pass:
                    await asyncio.to_thread(runner.warmup_second_pass, recognizer.config.sample_rate)
        except Exception as exc:
            self.state = EngineState.FAILED
            self.error = str(exc)
            logger.exception("model failed to load from %s", self.settings.model_path)
            raise
        self.recognizer, self._runner, self.lm, self._plan = recognizer, runner, lm, plan
        config = recognizer.config
        self._decoder = GreedyDecoder(config.tokens, config.blank_id, config.frame_seconds, config.word_delimiter)
        self._batcher = Batcher(runner.infer, plan.limits, config.sample_rate, self.metrics)
        self._batcher.start()
        if second_pass:
            self._second_batcher = Batcher(runner.second_pass, plan.limits, config.sample_rate, self.metrics)
            self._second_batcher.start()
        if self.state is EngineState.LOADING:
            self.state = EngineState.READY
            self.metrics.model_ready.set(1)
        seconds = time.monotonic() - started
        logger.info("model %s ready in %.1f s; serving plan: %s", config.name, seconds, plan.log_line())

    def _load_lm(self, recognizer: Recognizer) -> LexiconLM | None:
        """The beam search LM: ``ASR_LM_PATH``, else the served bundle's ``lm/`` folder, if present."""
        bundle_path = getattr(getattr(recognizer, "bundle", None), "path", None)
        folder = self.settings.lm_path or (Path(bundle_path) / "lm" if bundle_path is not None else None)
        if folder is None or self.settings.decoder == "greedy":
            return None
        config = recognizer.config
        return load_lexicon_lm(folder, config.tokens, config.blank_id, config.word_delimiter)

    @property
    def default_decoder_kind(self) -> str:
        """The plan's default decoder (``ASR_DECODER`` with ``auto`` resolved)."""
        return self.plan.decoder

    def decoder(self, kind: str | None = None, options: BeamOptions | None = None) -> Decoder:
        """A decoder for one request: ``greedy``, ``beam`` (with ``options``, default: the LM's tuned
        ones), ``attention`` (the second pass), or None for the server's default (:attr:`default_decoder_kind`).

        Raises :class:`NoLanguageModel` for ``beam`` without an LM and :class:`NoSecondPass` for
        ``attention`` on a model without one. (Whether the engine takes work now is
        :meth:`transcribe`'s decision, not this one's.)
        """
        if self.recognizer is None:
            raise EngineUnavailable("the model is not loaded yet")
        config = self.recognizer.config
        kind = kind or self.default_decoder_kind
        if kind == "greedy":
            return self.greedy_decoder
        if kind == "attention":
            if not self.has_second_pass:
                raise NoSecondPass(f"decoder=attention needs a second pass, and model {config.name} has none")
            return AlignedDecoder(config.tokens, config.blank_id, config.frame_seconds, config.word_delimiter)
        if self.lm is None:
            raise NoLanguageModel(f"beam search needs a language model, and model {config.name} has none")
        return BeamDecoder(self.lm, options or self.lm.defaults, config.frame_seconds)

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
        if self._second_batcher is not None:
            await self._second_batcher.stop()
        if self._runner is not None:
            await asyncio.to_thread(self._runner.close)
        self.state = EngineState.STOPPED
        self.metrics.model_ready.set(0)

    async def transcribe(
        self,
        audio: np.ndarray,
        decoder: Decoder | None = None,
        time_offset: float = 0.0,
        priority: int = 0,
        deadline: float | None = None,
    ) -> Transcript:
        """Transcribe mono float32 audio at the model's rate; long audio is cut and stitched.

        ``decoder`` turns each piece into a hypothesis (default: greedy); ``time_offset`` (seconds)
        is added to every time; ``priority`` orders the pieces in the batch queue (live streams'
        finals go ahead of uploads); ``deadline`` (a ``time.monotonic()`` value, default
        ``request_timeout_s`` from now) is when the request's time runs out.

        Raises :class:`EngineUnavailable` unless ready, ``QueueFull`` past the queue limit and
        :class:`RequestTimeout` past the deadline.
        """
        rate = self.model_config(accepted=True).sample_rate
        pieces_of = self.transcribe_pieces(audio, decoder, time_offset, priority, deadline)
        async with contextlib.aclosing(pieces_of) as results:
            pieces = [hyp async for hyp in results]
        hypothesis = stitch(pieces, [0.0] * len(pieces))  # piece times are already absolute
        return Transcript(hypothesis=hypothesis, duration=audio.shape[0] / rate)

    async def transcribe_pieces(
        self,
        audio: np.ndarray,
        decoder: Decoder | None = None,
        time_offset: float = 0.0,
        priority: int = 0,
        deadline: float | None = None,
    ) -> AsyncGenerator[Hypothesis, None]:
        """Yield each piece's hypothesis (times on the recording's timeline) in order, as soon as
        it is decoded.

        At most a batch per model worker of pieces of one recording wait in the batcher at a time, so an
        hour-long file fills batches without taking the whole queue, and its memory beyond the
        decoded audio stays bounded.
        """
        rate = self.model_config(accepted=True).sample_rate  # callers admit requests on arrival
        chosen = decoder or self.greedy_decoder
        second = isinstance(chosen, AlignedDecoder)
        batcher: Batcher[Any] = self.second_batcher if second else self.batcher
        decode: Callable[..., Hypothesis] = chosen.align if isinstance(chosen, AlignedDecoder) else chosen.decode
        piece_s = min(self.settings.chunk_seconds, SECOND_PASS_PIECE_S) if second else self.settings.chunk_seconds
        starts = split_points(audio, rate, piece_s)
        bounds = [*starts[1:], audio.shape[0]]
        window = max(2, self.plan.max_batch_size * self.plan.model_workers)
        deadline = time.monotonic() + self.settings.request_timeout_s if deadline is None else deadline
        futures: list[asyncio.Future[Any]] = []
        try:
            for index, start in enumerate(starts):
                while len(futures) < min(len(starts), index + window):
                    piece = len(futures)
                    futures.append(batcher.submit(audio[starts[piece] : bounds[piece]], priority))
                remaining = deadline - time.monotonic()
                try:
                    output = await asyncio.wait_for(futures[index], max(remaining, 0.001))
                    offset = time_offset + start / rate
                    yield await asyncio.wait_for(self.run_decoder(decode, output, offset), remaining)
                except TimeoutError as exc:
                    limit = self.settings.request_timeout_s
                    raise RequestTimeout(f"transcription did not finish within {limit:g} s") from exc
        finally:
            for future in futures:
                future.cancel()
