"""The engine: loads the model, owns the batcher, runner and decoders, and serves requests.

Its lifecycle is ``loading -> ready -> draining -> stopped`` (or ``failed``). Routers use three
members:

- :meth:`Engine.admit` takes a request on or refuses it (503 unless ready); the
  :class:`~app.engine.admission.Admission` it returns has the model's config, checks the
  request's decoding options, and transcribes the upload (whole or piece by piece) with its audio
  held against the upload budget (429 past it);
- :meth:`Engine.open_stream` opens a live stream session;
- :meth:`Engine.describe` gives the state, the model and the serving plan (``/readyz``,
  ``/v1/models``).

Requests say how to decode with :class:`~app.asr.options.DecodeOptions`; which decoder runs is
decided here, by :class:`~app.engine.decoders.Decoders`. Stream sessions reach the engine only
through :class:`~app.engine.streaming.StreamPort` (model config, inference, decoding), which the
engine implements.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from app.asr.align import AlignedDecoder, SecondPassOutput
from app.asr.beam import LexiconLM, load_lexicon_lm
from app.asr.bundle_files import LM_FOLDER, read_config
from app.asr.configs import BundleConfig
from app.asr.ctc import Hypothesis
from app.asr.options import DecodeOptions, DecoderKind
from app.asr.recognizer import Recognizer, open_recognizer
from app.asr.segment import MIN_PIECE_S, cut_pieces, searches_pauses, stitch
from app.config import Settings
from app.engine.admission import Admission, AudioBudget
from app.engine.batcher import Batcher
from app.engine.decoders import Decoder, Decoders, NoLanguageModel, NoSecondPass
from app.engine.plan import HardwarePlan, LoadedModel, Machine, ServingPlan, plan_hardware, plan_serving
from app.engine.runner import ModelRunner
from app.engine.streaming import STREAM_PRIORITY, Emit, StreamOptions, StreamSession, StreamTuning
from app.metrics import Metrics
from app.process import tune_process

logger = logging.getLogger(__name__)

__all__ = ["Engine", "EngineState", "EngineUnavailable", "NoLanguageModel", "NoSecondPass", "RequestTimeout"]

RecognizerFactory = Callable[[Settings, HardwarePlan], Recognizer]
"""Loads the model for the settings, on the plan's device, precision and threads."""
T = TypeVar("T")

SECOND_PASS_PIECE_S = 25.0
"""Longest piece the second pass gets (its window is 30 s; pieces are cut at quiet points near the target)."""
SECOND_PASS_MIN_PIECE_S = 6.0
"""Shortest piece the second pass gets where recordings are cut at pauses (``ASR_SPLIT=pauses``; the
CTC path's: ``app.asr.segment.MIN_PIECE_S``, 3 s). Chosen on the dev sets joined into long
recordings: the decoder reads a sentence better with its neighbours; CTC does better on shorter
pieces (docs/benchmarks.md, "Long recordings")."""


def piece_seconds(chunk_seconds: float, second_pass: bool) -> tuple[float, float]:
    """The longest piece a decoder gets (``ASR_CHUNK_SECONDS``, for the second pass at most
    :data:`SECOND_PASS_PIECE_S`) and the shortest where it is cut at a pause
    (:func:`app.asr.segment.cut_pieces`)."""
    if second_pass:
        return min(chunk_seconds, SECOND_PASS_PIECE_S), SECOND_PASS_MIN_PIECE_S
    return chunk_seconds, MIN_PIECE_S


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


def load_recognizer(settings: Settings, hardware: HardwarePlan) -> Recognizer:
    """The default factory: tune the process for the plan, then load the bundle at
    ``settings.model_path`` on the plan's runtime for its network."""
    tune_process(hardware.num_threads, settings.tune_malloc)
    network = read_config(settings.model_path).model.type
    return open_recognizer(
        settings.model_path,
        hardware.runtime_for(network),
        hardware.device,
        hardware.precision_for(network),
        hardware.num_threads,
        settings.spin_wait,
        hardware.pads_batches,
        settings.second_pass_beams,
        settings.second_pass_precision,
    )


@dataclass
class Transcript:
    """A request's result: the stitched hypothesis and the audio duration."""

    hypothesis: Hypothesis
    duration: float


@dataclass(frozen=True)
class ServedModel:
    """The loaded model as clients see it."""

    config: BundleConfig
    parameters: int
    decoders: list[DecoderKind]  # the decoders a request may choose


@dataclass(frozen=True)
class Description:
    """The engine for readiness probes, ``/v1/models`` and logs: its state, and once loaded, its
    model and serving plan."""

    state: EngineState
    error: str | None  # why the model failed to load
    model: ServedModel | None
    plan: ServingPlan | None

    @property
    def ready(self) -> bool:
        return self.state is EngineState.READY


class Engine:
    """Owns the recognizer, its runner thread, the batcher and the decoders."""

    def __init__(self, settings: Settings, metrics: Metrics, factory: RecognizerFactory = load_recognizer) -> None:
        self.settings = settings
        self.metrics = metrics
        self._factory = factory
        self.state = EngineState.LOADING
        self.recognizer: Recognizer | None = None
        self._runner: ModelRunner | None = None
        self._batcher: Batcher[np.ndarray] | None = None
        self._second_batcher: Batcher[SecondPassOutput] | None = None
        self._decoders: Decoders | None = None
        self._served: ServedModel | None = None
        self.error: str | None = None
        self._plan: ServingPlan | None = None
        self._uploads = AudioBudget(settings.max_transcribing_audio_seconds)

    @property
    def ready(self) -> bool:
        return self.state is EngineState.READY

    # The routers' surface

    def admit(self) -> Admission:
        """Take a request on: its admission (the model's config, and transcription with the upload
        budget); raises :class:`EngineUnavailable` (503) unless the engine takes work now."""
        return Admission(self, self.model_config(), self._uploads)

    def open_stream(
        self, options: StreamOptions, decoding: DecodeOptions, emit: Emit, tuning: StreamTuning
    ) -> StreamSession:
        """A live stream session sending its results through ``emit``; raises :class:`EngineUnavailable`
        unless ready, and :class:`NoLanguageModel` / :class:`NoSecondPass` for decoding options the
        model cannot serve."""
        return StreamSession(self, options, decoding, emit, self.metrics, tuning)

    def describe(self) -> Description:
        """The engine's state, and its model and serving plan once loaded."""
        return Description(self.state, self.error, self._served, self._plan)

    # The stream sessions' port (app.engine.streaming.StreamPort)

    def model_config(self, accepted: bool = False) -> BundleConfig:
        """The served model's config; raises :class:`EngineUnavailable` unless taking work now.

        ``accepted`` marks work admitted before a drain began (a request whose upload was under
        way, a live stream's last windows): it still runs while draining.
        """
        taking = self.ready or (accepted and self.state is EngineState.DRAINING)
        if not taking or self.recognizer is None:
            raise EngineUnavailable(f"the service is {self.state.value}")
        return self.recognizer.config

    async def infer(self, audio: np.ndarray, priority: int = 0, *, accepted: bool = False) -> np.ndarray:
        """Log-probs (frames, vocab) of one piece of audio through the batcher (no cutting).

        ``accepted`` marks work of a session taken on before a drain began (a live stream's last
        windows): it still runs while draining, as accepted requests do.
        """
        self.model_config(accepted)
        return await self.batcher.submit(audio, priority)

    async def decode(self, log_probs: np.ndarray, time_offset: float, options: DecodeOptions) -> Hypothesis:
        """A stream partial: (frames, vocab) log-probs decoded on the decode pool with the serving
        plan's partial decoder (beam search with the stream's ``options``, or greedy)."""
        decoder = self.decoders.partial(
            self.plan.stream_partial_decoder, options, self.settings.stream_partial_beam_size
        )
        return await self._run_decoder(decoder.decode, log_probs, time_offset)

    async def finalize(self, audio: np.ndarray, time_offset: float, options: DecodeOptions) -> Hypothesis:
        """A stream utterance's final: one pass over its audio with the decoder for ``options``
        (by default ``ASR_STREAM_FINAL_DECODER``), at stream priority, as accepted work."""
        decoder = self.decoders.choose(options, self.plan.stream_final_decoder)
        if isinstance(decoder, AlignedDecoder):
            return (await self.transcribe(audio, options, time_offset, STREAM_PRIORITY, decoder=decoder)).hypothesis
        log_probs = await self.infer(audio, STREAM_PRIORITY, accepted=True)
        return await self._run_decoder(decoder.decode, log_probs, time_offset)

    def check(self, options: DecodeOptions, stream: bool = False) -> None:
        """Raise :class:`NoLanguageModel` / :class:`NoSecondPass` if the model cannot decode as
        ``options`` ask (``stream``: for a stream's finals, whose default is ``ASR_STREAM_FINAL_DECODER``)."""
        self.decoders.choose(options, self.plan.stream_final_decoder if stream else None)

    # Loading, draining, stopping

    @property
    def plan(self) -> ServingPlan:
        """How the loaded model is served: every ``auto`` setting resolved (:mod:`app.engine.plan`)."""
        if self._plan is None:
            raise EngineUnavailable("the model is not loaded yet")
        return self._plan

    @property
    def decoders(self) -> Decoders:
        if self._decoders is None:
            raise EngineUnavailable("the model is not loaded yet")
        return self._decoders

    @property
    def batcher(self) -> Batcher[np.ndarray]:
        if self._batcher is None:
            raise EngineUnavailable("the model is not loaded yet")
        return self._batcher

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
        config = recognizer.config
        decoders = Decoders(config, lm, second_pass, plan.decoder)
        self.recognizer, self._runner, self._plan, self._decoders = recognizer, runner, plan, decoders
        self._served = ServedModel(config, recognizer.num_parameters(), decoders.kinds)
        self._batcher = Batcher(lambda audio, _: runner.infer(audio), plan.limits, config.sample_rate, self.metrics)
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
        bundle_path = recognizer.bundle_path
        folder = self.settings.lm_path or (bundle_path / LM_FOLDER if bundle_path is not None else None)
        if folder is None or self.settings.decoder == "greedy":
            return None
        config = recognizer.config
        return load_lexicon_lm(folder, config.tokens, config.blank_id, config.word_delimiter)

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

    # Transcription

    async def _run_decoder(self, fn: Callable[..., T], *args: object) -> T:
        """Run a (CPU-heavy) decoding function on the decode pool, off the event loop."""
        if self._runner is None:
            raise EngineUnavailable("the model is not loaded yet")
        return await self._runner.decode(fn, *args)

    async def transcribe(
        self,
        audio: np.ndarray,
        options: DecodeOptions | None = None,
        time_offset: float = 0.0,
        priority: int = 0,
        deadline: float | None = None,
        *,
        decoder: Decoder | None = None,
    ) -> Transcript:
        """Transcribe mono float32 audio at the model's rate; long audio is cut and stitched.

        ``options`` choose the decoder (default: the server's; ``decoder`` gives one already
        chosen); ``time_offset`` (seconds) is added to every time; ``priority`` orders the pieces
        in the batch queue (live streams' finals go ahead of uploads); ``deadline`` (a
        ``time.monotonic()`` value, default ``request_timeout_s`` from now) is when the request's
        time runs out.

        Raises :class:`EngineUnavailable` unless ready, ``QueueFull`` past the queue limit,
        :class:`RequestTimeout` past the deadline, and :class:`NoLanguageModel` /
        :class:`NoSecondPass` for a decoder the model lacks.
        """
        rate = self.model_config(accepted=True).sample_rate
        pieces_of = self.transcribe_pieces(audio, options, time_offset, priority, deadline, decoder=decoder)
        async with contextlib.aclosing(pieces_of) as results:
            pieces = [hyp async for hyp in results]
        hypothesis = stitch(pieces, [0.0] * len(pieces))  # piece times are already absolute
        return Transcript(hypothesis=hypothesis, duration=audio.shape[0] / rate)

    async def transcribe_pieces(
        self,
        audio: np.ndarray,
        options: DecodeOptions | None = None,
        time_offset: float = 0.0,
        priority: int = 0,
        deadline: float | None = None,
        *,
        decoder: Decoder | None = None,
    ) -> AsyncGenerator[Hypothesis, None]:
        """Yield each piece's hypothesis (times on the recording's timeline) in order, as soon as
        it is decoded.

        At most a batch per model worker of pieces of one recording wait in the batcher at a time, so an
        hour-long file fills batches without taking the whole queue, and its memory beyond the
        decoded audio stays bounded.
        """
        rate = self.model_config(accepted=True).sample_rate  # callers admit requests on arrival
        chosen = decoder or self.decoders.choose(options or DecodeOptions())
        second = isinstance(chosen, AlignedDecoder)
        batcher: Batcher[Any] = self.second_batcher if second else self.batcher
        prompt = (options or DecodeOptions()).second_pass_prompt(self.settings.prompt) if second else ""
        decode: Callable[..., Hypothesis] = chosen.align if isinstance(chosen, AlignedDecoder) else chosen.decode
        longest, shortest = piece_seconds(self.settings.chunk_seconds, second)
        at_pauses = (self.plan.second_pass_split if second else self.plan.split) == "pauses"
        if searches_pauses(audio.shape[0], rate, longest, at_pauses):  # off the event loop: seconds an hour
            spans = await asyncio.to_thread(cut_pieces, audio, rate, longest, at_pauses, shortest)
        else:
            spans = cut_pieces(audio, rate, longest, at_pauses, shortest)
        window = max(2, self.plan.max_batch_size * self.plan.model_workers)
        deadline = time.monotonic() + self.settings.request_timeout_s if deadline is None else deadline
        futures: list[asyncio.Future[Any]] = []
        try:
            for index, (start, _) in enumerate(spans):
                while len(futures) < min(len(spans), index + window):
                    begin, end = spans[len(futures)]
                    futures.append(batcher.submit(audio[begin:end], priority, prompt))
                remaining = deadline - time.monotonic()
                try:
                    output = await asyncio.wait_for(futures[index], max(remaining, 0.001))
                    offset = time_offset + start / rate
                    yield await asyncio.wait_for(self._run_decoder(decode, output, offset), remaining)
                except TimeoutError as exc:
                    limit = self.settings.request_timeout_s
                    raise RequestTimeout(f"transcription did not finish within {limit:g} s") from exc
        finally:
            for future in futures:
                future.cancel()
