"""Live stream sessions: buffered audio, windowed inference, endpointing and utterance finals.

A :class:`StreamSession` takes raw PCM pieces (:meth:`~StreamSession.push`) and runs one
processing task (:meth:`~StreamSession.run`) that turns them into typed events
(:mod:`app.engine.events`: partials, finals, then its close) through ``emit``; it knows no wire
format, which is the routers' business. It reaches the engine through :class:`StreamPort`. Its
windows go through the engine's batcher at stream priority, so the chunks of all live streams
share model batches ahead of offline requests; while a window is in flight new audio gathers, so
a loaded server takes larger steps instead of falling behind.

Partials come from windows with ``max_context_s`` of context on each side (less than the
model's receptive field: each step costs the context plus the new audio). A final is one pass
over the utterance's whole audio (decoded as the stream's :class:`~app.asr.options.DecodeOptions`
ask), so it equals the offline transcription of the same audio.

An utterance ends (its final is sent and the state resets) when :mod:`app.engine.endpointing`
says so: after ``silence_ms`` of silence once speech was heard, or at ``max_utterance_s``, cut at
the quietest point of its last second. The :class:`StreamRegistry` bounds how many sessions run
and drains them on shutdown.

Memory is bounded per session: audio waiting for the processing task (its inbox) is refused past
``max_backlog_s`` (:class:`StreamBacklog`), and an utterance holds at most ``max_utterance_s``.
How fast a client may send is the router's check (:mod:`app.engine.pacing`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from app.asr.configs import BundleConfig
from app.asr.ctc import Hypothesis
from app.asr.incremental import FrameGrid, GateKind, PcmStream, SpeechGate, Utterance, speech_gate
from app.asr.options import DecodeOptions
from app.engine.batcher import QueueFull
from app.engine.endpointing import Endpointer, cut_point
from app.engine.events import Closed, Emit, Final, Partial
from app.metrics import Metrics

logger = logging.getLogger(__name__)

__all__ = [
    "STREAM_PRIORITY",
    "Emit",
    "StreamBacklog",
    "StreamOptions",
    "StreamPort",
    "StreamRegistry",
    "StreamSession",
    "StreamTuning",
]
STREAM_PRIORITY = 1


@dataclass(frozen=True)
class StreamOptions:
    """One connection's settings (its config message, or the server defaults)."""

    sample_rate: int = 16000
    encoding: str = "pcm_s16le"
    interim_results: bool = True
    word_timestamps: bool = True
    silence_ms: int = 600
    max_utterance_s: float = 15.0


@dataclass(frozen=True)
class StreamTuning:
    """Server-side knobs shared by all sessions."""

    partial_interval_s: float = 0.5
    silence_db: float = -45.0  # the energy gate's threshold
    vad: GateKind = "silero"  # what tells speech from silence for endpointing
    vad_threshold: float = 0.5  # Silero's speech probability threshold
    preroll_s: float = 0.3
    max_context_s: float = 1.0  # partial windows' context per side; 0: the model's whole receptive field
    max_backlog_s: float = 15.0  # audio seconds the inbox may hold while the processing task is busy


class StreamPort(Protocol):
    """What a stream session needs of the engine (:class:`app.engine.engine.Engine` implements it):
    the model's config (``EngineUnavailable`` unless serving, or ``accepted`` work while draining),
    a window's (frames, vocab) log-probs through the batcher, a partial's decoding, an
    utterance's final decoded as the options ask, and the check of those options for finals."""

    def model_config(self, accepted: bool = False) -> BundleConfig: ...

    async def infer(self, audio: np.ndarray, priority: int = 0, *, accepted: bool = False) -> np.ndarray: ...

    async def decode(self, log_probs: np.ndarray, time_offset: float, options: DecodeOptions) -> Hypothesis: ...

    async def finalize(self, audio: np.ndarray, time_offset: float, options: DecodeOptions) -> Hypothesis: ...

    def check(self, options: DecodeOptions, stream: bool = False) -> None: ...


class StreamBacklog(Exception):
    """The stream's audio arrives faster than the server processes it: its inbox is full."""


class StreamSession:
    """The state of one live stream and the task that turns its audio into results."""

    def __init__(
        self,
        port: StreamPort,
        options: StreamOptions,
        decoding: DecodeOptions,
        emit: Emit,
        metrics: Metrics,
        tuning: StreamTuning,
    ) -> None:
        config = port.model_config()  # raises EngineUnavailable unless serving
        self.port = port
        self.metrics = metrics
        self.tuning = tuning
        self.rate = config.sample_rate
        self.grid = FrameGrid.for_model(config, tuning.max_context_s)
        self.vocab = len(config.tokens)
        self.blank_id = config.blank_id
        self._emit = emit
        self._inbox: deque[tuple[np.ndarray, float]] = deque()
        self._inbox_samples = 0
        self._wakeup = asyncio.Event()
        self.ending: str | None = None
        self.audio_received = False
        self.configure(options, decoding)
        self._utt = Utterance(self.grid)
        self._due_since: float | None = None
        self._last_partial = ""
        self._first_audio_at: float | None = None
        self._partial_sent = False

    def _new_gate(self) -> SpeechGate:
        return speech_gate(self.tuning.vad, self.rate, self.tuning.silence_db, self.tuning.vad_threshold)

    def configure(self, options: StreamOptions, decoding: DecodeOptions | None = None) -> None:
        """Apply a connection's settings and finals' decoding (None: keep it); before any audio only."""
        if self.audio_received:
            raise RuntimeError("a stream's config must come before its audio")
        if decoding is not None:
            self.port.check(decoding, stream=True)
            self.decoding = decoding
        self.options = options
        self._pcm = PcmStream(options.encoding, options.sample_rate, self.rate)
        self._endpoint = Endpointer(
            self._new_gate,
            self.rate,
            self.grid.frame_samples,
            self.blank_id,
            options.silence_ms,
            options.max_utterance_s,
        )

    def seconds_of(self, size: int) -> float:
        """Audio seconds in ``size`` bytes of this stream's PCM."""
        return size / (self.options.sample_rate * self._pcm.width)

    def push(self, data: bytes) -> None:
        """Queue a piece of raw PCM (any size) for the processing task.

        Raises :class:`StreamBacklog` instead when the inbox would hold over ``max_backlog_s``.
        """
        limit = self.tuning.max_backlog_s
        if self._inbox_samples / self.rate + self.seconds_of(len(data)) > limit:
            raise StreamBacklog(f"the server fell over {limit:g} s of audio behind this stream; reconnect later")
        now = time.perf_counter()
        self.audio_received = True
        if self._first_audio_at is None:
            self._first_audio_at = now
        samples = self._pcm.decode(data)
        if samples.size:
            self._queue(samples, now)

    def _queue(self, samples: np.ndarray, received: float) -> None:
        self._inbox.append((samples, received))
        self._inbox_samples += samples.shape[0]
        self._wakeup.set()

    def finish(self, reason: str) -> None:
        """End the stream: the processing task sends the last final, then returns."""
        if self.ending is not None:
            return
        self.ending = reason
        tail = self._pcm.flush()
        if tail.size:
            self._queue(tail, time.perf_counter())
        self._wakeup.set()

    async def run(self) -> None:
        """Process audio until :meth:`finish`; raises ``QueueFull`` if a final cannot be scheduled."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            await self._process()
            if self.ending is not None:
                self._drain_inbox()
                await self._finalize(self._utt.samples)
                await self._emit(Closed(self.ending))
                return

    async def _process(self) -> None:
        while True:
            self._drain_inbox()
            utt = self._utt
            if self._endpoint.due():
                await self._finalize(utt.samples)
            elif self._endpoint.too_long(utt.samples):
                await self._finalize(cut_point(utt, self.rate))
            elif not self._step_due() or not await self._step():
                return

    def _step_due(self) -> bool:
        """Enough new audio with speech in it, and the stream is not ending (the final follows).

        New audio that is all silence waits: the next step or the final takes it along.
        """
        new = self._utt.new_samples
        speech_in_new = self._endpoint.speech_in_last(new)
        return self.ending is None and speech_in_new and new >= self.tuning.partial_interval_s * self.rate

    def _drain_inbox(self) -> None:
        """Move queued audio into the utterance, stopping where it ends (the rest is the next one's)."""
        endpoint = self._endpoint
        while self._inbox and not endpoint.due() and not endpoint.too_long(self._utt.samples):
            samples, received = self._inbox.popleft()
            self._inbox_samples -= samples.shape[0]
            self._utt.append(samples)
            endpoint.feed(samples)
            if self._due_since is None and self._step_due():
                self._due_since = received
            if not endpoint.heard_speech:
                self._trim_preroll()

    def _trim_preroll(self) -> None:
        """Before speech, keep only a little audio: silence costs neither memory nor model time."""
        utt = self._utt
        keep = int(self.tuning.preroll_s * self.rate)
        if utt.samples > 2 * keep:
            tail = utt.audio[-keep:]
            self._utt = Utterance(self.grid, utt.start + utt.samples - tail.shape[0])
            self._utt.append(tail)
            self._due_since = None

    async def _infer(self, audio: np.ndarray) -> np.ndarray:
        return await self.port.infer(audio, priority=STREAM_PRIORITY, accepted=True)

    async def _step(self) -> bool:
        """Run a window over the new audio, commit what is final and send a partial.

        Returns False when the batch queue is full: the step waits for more audio.
        """
        due, self._due_since = self._due_since, None
        window = self._utt.window()
        try:
            log_probs = await self._infer(window.audio)
        except QueueFull:
            logger.warning("stream step postponed: the batch queue is full")
            self.metrics.rejected.labels(reason="queue_full").inc()
            return False
        utt = self._utt
        provisional = utt.accept(window, log_probs)
        full = np.concatenate([utt.log_probs(self.vocab), provisional])
        self._endpoint.observe(full)
        if self.options.interim_results:
            await self._send_partial(full, window.end, due)
        return True

    async def _send_partial(self, log_probs: np.ndarray, end: int, due: float | None) -> None:
        """Decode the utterance so far (up to its sample ``end``); send it if its text changed."""
        utt = self._utt
        hyp = await self._decode(log_probs, utt.start)
        if hyp.text and hyp.text != self._last_partial:
            self._last_partial = hyp.text
            start, stop = utt.start / self.rate, (utt.start + end) / self.rate
            await self._emit(Partial(hyp.text, round(start, 3), round(stop, 3)))
            self._observe_partial(due)

    async def _finalize(self, end: int) -> None:
        """Send the final of the utterance up to sample ``end``; the rest starts the next one."""
        utt = self._utt
        rest = utt.split(end) if end < utt.samples else utt.audio[:0]
        if self._endpoint.heard_speech and utt.samples > 0:
            hyp = await self._final_hypothesis(utt)
            await self._emit(self._final(hyp, utt))
            self.metrics.stream_finals.inc()
        self._utt = Utterance(self.grid, utt.start + utt.samples)
        self._endpoint.reset()
        self._last_partial = ""
        self._due_since = None
        if rest.size:
            self._utt.append(rest)
            self._endpoint.feed(rest)

    def _final(self, hyp: Hypothesis, utt: Utterance) -> Final:
        words = tuple(hyp.words) if self.options.word_timestamps else ()
        start, end = utt.start / self.rate, (utt.start + utt.samples) / self.rate
        return Final(hyp.text, round(start, 3), round(end, 3), words)

    async def _final_hypothesis(self, utt: Utterance) -> Hypothesis:
        """The final of the whole utterance, decoded as the stream's options ask (by default with
        ``ASR_STREAM_FINAL_DECODER``: the server's default decoder, as an offline request gets it)."""
        return await self.port.finalize(utt.audio, utt.start / self.rate, self.decoding)

    async def _decode(self, log_probs: np.ndarray, start: int) -> Hypothesis:
        """A partial: the server's partial decoder, with this stream's beam options and hotwords."""
        return await self.port.decode(log_probs, start / self.rate, self.decoding)

    def _observe_partial(self, due: float | None) -> None:
        now = time.perf_counter()
        if due is not None:
            self.metrics.stream_partial_latency.observe(now - due)
        if self._first_audio_at is not None and not self._partial_sent:
            self.metrics.first_partial.observe(now - self._first_audio_at)
        self._partial_sent = True


class StreamRegistry:
    """The live sessions: a bound on their number, the active-streams gauge, and the drain."""

    def __init__(self, limit: int, metrics: Metrics) -> None:
        self.limit = limit
        self.metrics = metrics
        self._sessions: set[StreamSession] = set()
        self._empty = asyncio.Event()
        self._empty.set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining = False
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def active(self) -> int:
        return len(self._sessions)

    def has_room(self) -> bool:
        return len(self._sessions) < self.limit

    def add(self, session: StreamSession) -> None:
        self._loop = asyncio.get_running_loop()
        self._sessions.add(session)
        self._empty.clear()
        self.metrics.active_streams.set(len(self._sessions))

    def remove(self, session: StreamSession) -> None:
        self._sessions.discard(session)
        self.metrics.active_streams.set(len(self._sessions))
        if not self._sessions:
            self._empty.set()

    async def drain(self, timeout_s: float) -> None:
        """Ask every live session to send its finals and close; wait up to ``timeout_s``."""
        for session in list(self._sessions):
            session.finish("shutdown")
        try:
            async with asyncio.timeout(timeout_s):
                await self._empty.wait()
        except TimeoutError:
            logger.warning("%d streams still open after %.0f s of shutdown", len(self._sessions), timeout_s)

    def drain_soon(self, then: Callable[[], None], timeout_s: float) -> bool:
        """From a signal handler: drain on the streams' loop, then call ``then``.

        Returns False (nothing scheduled) when no stream is live or a drain already began.
        """
        loop = self._loop
        if not self._sessions or loop is None or self._draining or loop.is_closed():
            return False
        self._draining = True

        def start() -> None:
            task = loop.create_task(self._drain_then(then, timeout_s), name="stream-drain")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        loop.call_soon_threadsafe(start)
        return True

    async def _drain_then(self, then: Callable[[], None], timeout_s: float) -> None:
        logger.info("shutting down: sending the finals of %d live streams", len(self._sessions))
        await self.drain(timeout_s)
        then()
