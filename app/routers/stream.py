"""WS /stream: live audio in, partial and final transcripts out (protocol in docs/api.md)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import MutableMapping
from typing import Any, Literal

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.asr.options import DecodeOptions, DecodeOptionsError
from app.config import Settings
from app.engine.engine import Engine
from app.engine.events import Closed, Final, Partial, StreamEvent
from app.engine.pacing import AudioTooFast, PaceLimits, StreamPace
from app.engine.streaming import StreamBacklog, StreamOptions, StreamRegistry, StreamSession, StreamTuning
from app.errors import (
    GOING_AWAY,
    INTERNAL,
    NORMAL,
    POLICY,
    TOO_BIG,
    TRY_LATER,
    UNSUPPORTED,
    InvalidParameter,
    Problem,
    describe,
    stream_closing,
    ws_message,
)
from app.metrics import Metrics, close_code_label
from app.routers.decoding import StreamDecodingIn, decode_options
from app.schemas import StreamFinalOut, StreamPartialOut, WordOut

logger = logging.getLogger(__name__)

router = APIRouter(tags=["streaming"])

__all__ = ["GOING_AWAY", "INTERNAL", "NORMAL", "POLICY", "TOO_BIG", "TRY_LATER", "UNSUPPORTED", "router"]
_END_CODES = {"eof": NORMAL, "shutdown": GOING_AWAY}
BACKLOG_MARGIN_S = 10.0  # audio a stream's inbox may hold beyond its burst while the server is busy


class EndpointingIn(BaseModel):
    """Per-connection endpointing; omitted fields take the server defaults."""

    model_config = ConfigDict(extra="forbid")

    silence_ms: int | None = Field(None, ge=100, description="Silence that ends an utterance, in ms.")
    max_utterance_s: float | None = Field(None, gt=1, description="Longest utterance before a forced final.")


class ConfigIn(BaseModel):
    """The optional first message of a stream."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["config"]
    sample_rate: int = Field(16000, ge=8000, le=192000, description="Rate of the audio sent, in Hz.")
    encoding: Literal["pcm_s16le", "pcm_f32le"] = "pcm_s16le"
    interim_results: bool = True
    word_timestamps: bool = True
    endpointing: EndpointingIn = Field(default_factory=EndpointingIn)
    decoding: StreamDecodingIn | None = Field(None, description="How finals are decoded; omitted: the server's way.")


class StreamClosed(Exception):
    """End the connection with ``code``, after an error message unless ``error`` is None."""

    def __init__(self, code: int, error: str | None = None, message: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.error = error
        self.message = message

    def problem(self) -> Problem | None:
        return None if self.error is None else stream_closing(self.code, self.error, self.message)


@router.websocket("/stream")
async def stream(websocket: WebSocket) -> None:
    """Live transcription: send PCM audio, receive partial and final transcripts."""
    await websocket.accept()
    await StreamConnection(websocket).serve()


class StreamConnection:
    """One WebSocket connection: its messages in, its session's results out, its close."""

    def __init__(self, websocket: WebSocket) -> None:
        state = websocket.app.state
        self.ws = websocket
        self.settings: Settings = state.settings
        self.engine: Engine = state.engine
        self.registry: StreamRegistry = state.streams
        self.metrics: Metrics = state.metrics
        self.started = time.monotonic()
        s = self.settings
        self.pace = StreamPace(PaceLimits(s.stream_max_speed, s.stream_burst_s, s.stream_idle_timeout_s), self.started)

    async def serve(self) -> None:
        """Run the connection to its end; every way out closes it with a fitting code."""
        session: StreamSession | None = None
        try:
            session = self._open()
            await self._close(await self._run(session))
        except StreamClosed as exc:
            await self._close(exc.code, exc.problem())
        except WebSocketDisconnect as exc:
            self.metrics.stream_closes.labels(code=close_code_label(exc.code)).inc()
        except Exception as exc:  # the error table's (a full queue, a model not ready) or an internal one
            problem = describe(exc, "stream failed")
            problem.record(self.metrics)
            await self._close(problem.close or INTERNAL, problem)
        finally:
            if session is not None:
                self.registry.remove(session)

    def _open(self) -> StreamSession:
        if not self.registry.has_room():
            self.metrics.rejected.labels(reason="too_many_streams").inc()
            message = f"the server serves its limit of {self.registry.limit} streams; retry later"
            raise StreamClosed(TRY_LATER, "too_many_streams", message)
        session = self.engine.open_stream(self._defaults(), self._default_decoding(), self._emit, self._tuning())
        self.registry.add(session)
        return session

    async def _emit(self, event: StreamEvent) -> None:
        """Send a session's event to the client: partials and finals as their messages (its close
        is the connection's: :meth:`_close`)."""
        if not isinstance(event, Closed):
            await self.ws.send_json(stream_message(event))

    def _error_message(self, problem: Problem) -> dict[str, Any]:
        """The message that tells the client why the stream closes."""
        return ws_message(problem)

    def _defaults(self) -> StreamOptions:
        s = self.settings
        return StreamOptions(silence_ms=s.stream_silence_ms, max_utterance_s=s.stream_max_utterance_s)

    def _default_decoding(self) -> DecodeOptions:
        """A new session's decoding before any config: the server's."""
        return DecodeOptions()

    def _tuning(self) -> StreamTuning:
        s = self.settings
        return StreamTuning(
            partial_interval_s=s.stream_partial_interval_s,
            silence_db=s.stream_silence_db,
            vad=s.stream_vad,
            vad_threshold=s.stream_vad_threshold,
            max_context_s=s.stream_max_context_s,
            max_backlog_s=s.stream_burst_s + BACKLOG_MARGIN_S,
        )

    async def _run(self, session: StreamSession) -> int:
        processor = asyncio.create_task(session.run(), name="stream-process")
        receiver = asyncio.create_task(self._receive_loop(session), name="stream-receive")
        try:
            return await self._supervise(session, processor, receiver)
        finally:
            for task in (processor, receiver):
                task.cancel()
            await asyncio.gather(processor, receiver, return_exceptions=True)

    async def _supervise(
        self, session: StreamSession, processor: asyncio.Task[None], receiver: asyncio.Task[None]
    ) -> int:
        """Wait for the end (eof, idle, session limit, shutdown or an error); the close code."""
        remaining = self.settings.stream_max_session_s - (time.monotonic() - self.started)
        done, _ = await asyncio.wait({processor, receiver}, timeout=max(0.0, remaining), return_when="FIRST_COMPLETED")
        if receiver in done:
            receiver.result()  # raises the protocol error or the disconnect
        elif processor not in done:
            session.finish("session_limit")
        await processor  # the finals of what was received
        return self._end(session.ending or "eof")

    def _end(self, reason: str) -> int:
        """The close code of a session that ended for ``reason``; raises StreamClosed past a limit."""
        if reason == "idle_timeout":
            message = f"the stream's audio fell over {self.settings.stream_idle_timeout_s:g} s behind the clock"
            raise StreamClosed(POLICY, "idle_timeout", message)
        if reason == "session_limit":
            raise StreamClosed(
                POLICY, "session_too_long", f"the stream reached its limit of {self.settings.stream_max_session_s:g} s"
            )
        return _END_CODES.get(reason, NORMAL)

    async def _receive_loop(self, session: StreamSession) -> None:
        first = True
        while True:
            message = await self._receive()
            if message is None:
                session.finish("idle_timeout")
                return
            data = message.get("bytes")
            if data is not None:
                self._check_size(len(data))
                self._push(session, data)
            elif self._control(session, message.get("text") or "", first) == "eof":
                session.finish("eof")
                return
            first = False

    def _push(self, session: StreamSession, data: bytes) -> None:
        """Hand audio to the session, unless it comes too fast or the session is too far behind."""
        try:
            self.pace.admit(session.seconds_of(len(data)), time.monotonic())
            session.push(data)
        except AudioTooFast as exc:
            self.metrics.rejected.labels(reason="audio_too_fast").inc()
            raise StreamClosed(POLICY, "audio_too_fast", str(exc)) from exc
        except StreamBacklog as exc:
            self.metrics.rejected.labels(reason="stream_backlog").inc()
            raise StreamClosed(TRY_LATER, "server_behind", str(exc)) from exc

    async def _receive(self) -> MutableMapping[str, Any] | None:
        """The next message, or None once the stream is idle (its audio fell too far behind)."""
        try:
            async with asyncio.timeout(max(0.0, self.pace.idle_at - time.monotonic())):
                message = await self.ws.receive()
        except TimeoutError:
            return None
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1005))
        return message

    def _check_size(self, size: int) -> None:
        limit = self.settings.stream_max_message_bytes
        if size > limit:
            raise StreamClosed(TOO_BIG, "message_too_big", f"a message of {size} bytes exceeds the limit of {limit}")

    def _control(self, session: StreamSession, text: str, first: bool) -> str:
        """Handle a text message: the config (first only) or eof; anything else ends the stream."""
        self._check_size(len(text.encode()))
        try:
            payload = json.loads(text)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            raise StreamClosed(UNSUPPORTED, "invalid_message", 'text messages are JSON objects like {"type": "eof"}')
        kind = payload.get("type")
        if kind == "eof":
            return "eof"
        if kind == "config":
            if not first:
                raise StreamClosed(POLICY, "invalid_config", "the config message must be the first message")
            config = self._config(payload)
            session.configure(self._options(config), self._decoding(config))
            return "config"
        shown = json.dumps(kind)[:40]
        raise StreamClosed(
            UNSUPPORTED, "unknown_message_type", f"unknown message type {shown}: send config, eof, or binary audio"
        )

    def _config(self, payload: dict[str, Any]) -> ConfigIn:
        try:
            return ConfigIn.model_validate(payload)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err.get('loc', ())) or 'config'}: {err.get('msg', 'invalid')}"
                for err in exc.errors()
            )
            raise StreamClosed(POLICY, "invalid_config", problems) from exc

    def _decoding(self, config: ConfigIn) -> DecodeOptions | None:
        """The finals' decoding options of a config (None: the server's); a conflict or a malformed
        hotword closes the stream as an invalid config."""
        if config.decoding is None:
            return None
        try:
            return decode_options(config.decoding)
        except (InvalidParameter, DecodeOptionsError) as exc:
            raise StreamClosed(POLICY, "invalid_config", f"decoding: {exc}") from exc

    def _options(self, config: ConfigIn) -> StreamOptions:
        s = self.settings
        silence = config.endpointing.silence_ms or s.stream_silence_ms
        longest = config.endpointing.max_utterance_s or s.stream_max_utterance_s
        if silence > s.stream_max_silence_ms:
            raise StreamClosed(POLICY, "invalid_config", f"endpointing.silence_ms exceeds {s.stream_max_silence_ms}")
        if longest > s.stream_max_utterance_limit_s:
            raise StreamClosed(
                POLICY, "invalid_config", f"endpointing.max_utterance_s exceeds {s.stream_max_utterance_limit_s:g}"
            )
        return StreamOptions(
            sample_rate=config.sample_rate,
            encoding=config.encoding,
            interim_results=config.interim_results,
            word_timestamps=config.word_timestamps,
            silence_ms=silence,
            max_utterance_s=longest,
        )

    async def _close(self, code: int, problem: Problem | None = None) -> None:
        """Send the error message (if any) and close; a client already gone is not an error."""
        self.metrics.stream_closes.labels(code=close_code_label(code)).inc()
        if problem is not None:
            problem.log(f"stream closed with {code}")
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            if problem is not None:
                await self.ws.send_json(self._error_message(problem))
            await self.ws.close(code, reason=str(problem.code) if problem is not None else "")


def stream_message(event: Partial | Final) -> dict[str, Any]:
    """The ``/stream`` message of a partial or a final (docs/api.md)."""
    if isinstance(event, Partial):
        return StreamPartialOut(text=event.text, start=event.start, end=event.end).model_dump()
    words = [WordOut(word=w.word, start=w.start, end=w.end, confidence=w.confidence) for w in event.words]
    return StreamFinalOut(text=event.text, start=event.start, end=event.end, words=words).model_dump()
