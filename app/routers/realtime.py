"""WS /v1/realtime: OpenAI's Realtime transcription API on the stream engine (protocol in docs/api.md).

A connection runs like a ``/stream`` one (:class:`~app.routers.stream.StreamConnection`: the same
stream sessions, batching, stream limit, pacing, idle timeout and closes); only its messages differ
(:mod:`app.routers.realtime_protocol`). A stream session holds the input audio buffer: under server
VAD its finals are the items; a commit finishes it (its finals are the committed item) and a fresh
one takes the audio that follows; a clear drops it for a fresh one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import MutableMapping
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, WebSocket

from app.asr.options import DecodeOptions
from app.engine.engine import EngineState, EngineUnavailable
from app.engine.events import Closed, Final, Partial, StreamEvent
from app.engine.streaming import StreamOptions, StreamSession, StreamTuning
from app.errors import Problem
from app.routers.openai import LANGUAGES, model_names
from app.routers.realtime_protocol import (
    CLIENT_EVENTS,
    MIN_COMMIT_MS,
    AppendIn,
    BufferIn,
    EventError,
    ItemTracker,
    Limits,
    SessionConfig,
    SessionUpdateIn,
    TurnDetection,
    error_event,
    event,
    pcm16,
    problem_event,
    session_json,
    updated,
    validated,
)
from app.routers.stream import GOING_AWAY, POLICY, StreamClosed, StreamConnection

logger = logging.getLogger(__name__)

router = APIRouter(tags=["openai"])

NO_ENDPOINT_MS = 2**31 - 1  # without turn detection, only commits end an item


@router.websocket("/v1/realtime")
async def realtime(websocket: WebSocket) -> None:
    """OpenAI's Realtime API for transcription sessions: connect with `?intent=transcription`, send
    `session.update` and `input_audio_buffer.append` / `commit` / `clear`; receive
    `conversation.item.input_audio_transcription.delta` / `.completed` and the buffer's events."""
    await websocket.accept()
    await RealtimeConnection(websocket).serve()


class RealtimeConnection(StreamConnection):
    """One transcription session: OpenAI client events in, OpenAI server events out."""

    def __init__(self, websocket: WebSocket) -> None:
        super().__init__(websocket)
        self.config: SessionConfig  # set on opening, from the query and the server's settings
        self.limits: Limits
        self.items = ItemTracker()
        self.session: StreamSession | None = None
        self.processor: asyncio.Task[None] | None = None
        self.built: SessionConfig | None = None  # the configuration the stream session was built from
        self.buffered_ms = 0.0  # audio in the buffer since the last commit or clear
        self.appended_ms = 0.0  # all audio appended
        self.committing = False
        self.commit_finals: list[Final] = []
        self.send_lock = asyncio.Lock()

    # The stream session: built from the session configuration

    def _open(self) -> StreamSession:
        if self.ws.query_params.get("intent") != "transcription":
            message = "this server serves transcription sessions: connect to /v1/realtime?intent=transcription"
            raise StreamClosed(POLICY, "unsupported_intent", message)
        served = self.engine.admit().config.name  # EngineUnavailable: the error table's not_ready
        s = self.settings
        names = model_names(s, served)
        self.limits = Limits(
            names, frozenset(LANGUAGES), s.stream_silence_ms, s.stream_max_silence_ms, s.stream_vad_threshold
        )
        model = self.ws.query_params.get("model") or served
        if model not in self.limits.models:
            message = f"model {model[:60]!r} is not served here; use one of: {', '.join(self.limits.models)}"
            raise StreamClosed(POLICY, "model_not_found", message)
        self.config = SessionConfig(model, TurnDetection(s.stream_silence_ms, threshold=self.limits.threshold))
        return self._start()

    def _start(self) -> StreamSession:
        """A stream session for the buffer, from the current configuration, and its processing task."""
        self.built = self.config
        try:
            session = super()._open()
        except EngineUnavailable as exc:
            if self.engine.describe().state is EngineState.DRAINING:
                raise StreamClosed(GOING_AWAY) from exc  # shutting down between two buffers
            raise
        self.session = session
        self.processor = asyncio.create_task(session.run(), name="realtime-process")
        self.items.offset_ms = round(self.appended_ms)
        return session

    def _defaults(self) -> StreamOptions:
        vad = self.config.turn_detection
        return StreamOptions(
            sample_rate=self.config.wire_rate,
            encoding="pcm_s16le",
            word_timestamps=False,
            silence_ms=vad.silence_duration_ms if vad else NO_ENDPOINT_MS,
            max_utterance_s=self.settings.stream_max_utterance_s,
        )

    def _default_decoding(self) -> DecodeOptions:
        """The session's prompt, which its finals' second pass reads first."""
        return DecodeOptions(prompt=self.config.prompt)

    def _tuning(self) -> StreamTuning:
        vad = self.config.turn_detection
        tuning = super()._tuning()
        if vad is None:
            return tuning
        return replace(tuning, preroll_s=vad.prefix_padding_ms / 1000, vad_threshold=vad.threshold)

    async def _restart(self, cancel: bool) -> None:
        """Replace the stream session by a fresh one; ``cancel`` drops the old one's work."""
        old, processor = self.session, self.processor
        if cancel and processor is not None:
            processor.cancel()
            await asyncio.gather(processor, return_exceptions=True)
        if old is not None:
            self.registry.remove(old)
        self._start()

    # The connection's life

    async def _run(self, session: StreamSession) -> int:
        receiving: asyncio.Task[MutableMapping[str, Any] | None] | None = None
        try:
            await self._send(event("session.created", session=session_json(self.config)))
            while True:
                receiving = receiving or asyncio.create_task(self._receive(), name="realtime-receive")
                processor = self.processor
                assert processor is not None and self.session is not None
                remaining = self.settings.stream_max_session_s - (time.monotonic() - self.started)
                done, _ = await asyncio.wait(
                    {receiving, processor}, timeout=max(0.0, remaining), return_when="FIRST_COMPLETED"
                )
                if processor in done:  # ended on its own: the shutdown drain, or a failure
                    break
                if receiving not in done:
                    self.session.finish("session_limit")
                    break
                message, receiving = receiving.result(), None
                if message is None:
                    self.session.finish("idle_timeout")
                    break
                await self._handle(message)
            processor = self.processor
            assert processor is not None
            await processor  # the finals of what was received
            await self._last_item()
            return self._end(self.session.ending or "eof")
        finally:
            if self.session is not None:  # first: the task may be cancelled in what follows
                self.registry.remove(self.session)
            tasks = [t for t in (receiving, self.processor) if t is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _last_item(self) -> None:
        """At the end, a buffer that was never committed (no turn detection) is sent as an item."""
        if self.built is not None and self.built.turn_detection is None and self.items.item is not None:
            await self._send(self.items.committed(), *self.items.completed([], self.buffered_ms / 1000))

    async def _send(self, *events: dict[str, Any]) -> None:
        async with self.send_lock:  # the processing task and the connection both send
            for item in events:
                await self.ws.send_json(item)

    # Server events from the stream session

    async def _emit(self, result: StreamEvent) -> None:
        """A stream session's event as OpenAI's: partials become deltas, finals items (under
        server VAD) or parts of the committed one; a session's close is the buffer's (commit, clear)."""
        vad = self.built is not None and self.built.turn_detection is not None
        if isinstance(result, Closed):
            return
        if isinstance(result, Partial):
            await self._send(*self.items.partial(result, vad))
        elif self.committing:
            self.commit_finals.append(result)
        elif vad:
            await self._send(*self.items.vad_final(result))
            self.buffered_ms = 0.0
        else:
            self.items.hold(result)

    def _error_message(self, problem: Problem) -> dict[str, Any]:
        return problem_event(problem)

    # Client events

    async def _handle(self, message: MutableMapping[str, Any]) -> None:
        """One client message; a bad one gets an error event and the session goes on."""
        payload: Any = None
        try:
            text = message.get("text")
            if text is None:
                raise EventError("send JSON text events; audio goes base64-encoded in input_audio_buffer.append")
            self._check_size(len(text.encode()))
            try:
                payload = json.loads(text)
            except ValueError:
                payload = None
            if not isinstance(payload, dict):
                raise EventError('events are JSON objects like {"type": "input_audio_buffer.commit"}', "invalid_json")
            await self._dispatch(payload)
        except EventError as exc:
            event_id = payload.get("event_id") if isinstance(payload, dict) else None
            logger.warning("realtime event refused: %s (%s)", exc.code, exc.message)
            self.metrics.errors.labels(type="invalid_request_error").inc()
            shown_id = event_id if isinstance(event_id, str) else None
            await self._send(error_event(exc.message, exc.code, exc.param, shown_id))

    async def _dispatch(self, payload: dict[str, Any]) -> None:
        kind = payload.get("type")
        if kind == "input_audio_buffer.append":
            self._append(validated(AppendIn, payload))
        elif kind == "input_audio_buffer.commit":
            validated(BufferIn, payload)
            await self._commit()
        elif kind == "input_audio_buffer.clear":
            validated(BufferIn, payload)
            await self._clear()
        elif kind == "session.update":
            await self._update(validated(SessionUpdateIn, payload))
        else:
            shown = json.dumps(kind)[:60]
            supported = ", ".join(f"'{name}'" for name in CLIENT_EVENTS)
            raise EventError(f"Invalid value: {shown}. Supported values are: {supported}.", param="type")

    def _append(self, append: AppendIn) -> None:
        assert self.session is not None and self.built is not None
        data = pcm16(append.audio, self.built.format)
        self._push(self.session, data)  # the stream's pace and backlog limits
        ms = self.session.seconds_of(len(data)) * 1000
        self.buffered_ms += ms
        self.appended_ms += ms

    async def _commit(self) -> None:
        if self.buffered_ms < MIN_COMMIT_MS:
            message = (
                f"Error committing input audio buffer: buffer too small. Expected at least {MIN_COMMIT_MS}ms "
                f"of audio, but buffer only has {self.buffered_ms:.2f}ms of audio."
            )
            raise EventError(message, "input_audio_buffer_commit_empty")
        assert self.session is not None and self.processor is not None
        await self._send(self.items.committed())
        self.committing, self.commit_finals = True, []
        self.session.finish("commit")
        try:
            await self.processor  # its finals come to commit_finals
        finally:
            self.committing = False
        await self._send(*self.items.completed([f.text for f in self.commit_finals], self.buffered_ms / 1000))
        self.buffered_ms = 0.0
        await self._restart(cancel=False)

    async def _clear(self) -> None:
        self.items.clear()
        self.buffered_ms = 0.0
        await self._restart(cancel=True)
        await self._send(event("input_audio_buffer.cleared"))

    async def _update(self, update: SessionUpdateIn) -> None:
        """Apply a session update; audio settings apply to the buffer from its next start."""
        assert self.session is not None and self.built is not None
        new = updated(self.config, update.session, self.limits)
        built = self.built
        changed = new.audio_settings() != built.audio_settings()
        if changed and self.session.audio_received and (new.format, new.rate) != (built.format, built.rate):
            message = "the audio format can change only while the input audio buffer is empty: commit or clear it"
            raise EventError(message, param="session.audio.input.format")
        self.config = new
        if changed and not self.session.audio_received:  # else turn detection changes at the next commit or clear
            await self._restart(cancel=True)
        await self._send(event("session.updated", session=session_json(new)))
