"""What OpenAI's Realtime transcription protocol says: client events in, server events out.

The schemas of the client events this server takes (``session.update`` of a transcription session,
``input_audio_buffer.append`` / ``commit`` / ``clear``), the session configuration they build, the
server events in OpenAI's shapes, and :class:`ItemTracker`, which turns a stream session's partials
and finals into conversation items: ``speech_started``/``speech_stopped`` (server VAD only),
``committed``, transcript deltas and ``completed``. The connection itself is
:mod:`app.routers.realtime`.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.asr.options import MAX_PROMPT_CHARS
from app.engine.events import Final, Partial
from app.errors import Problem

CLIENT_EVENTS = ("session.update", "input_audio_buffer.append", "input_audio_buffer.commit", "input_audio_buffer.clear")
PCM, PCMU, PCMA = "audio/pcm", "audio/pcmu", "audio/pcma"
G711_RATE = 8000
MIN_COMMIT_MS = 100  # the least audio a commit takes, as OpenAI's
MIN_PREFIX_PADDING_MS = 20


class EventError(Exception):
    """A client event the server refuses; the session stays open (an ``error`` event)."""

    def __init__(self, message: str, code: str = "invalid_value", param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param


# Client events


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ServerVadIn(_Strict):
    type: Literal["server_vad"]
    threshold: float | None = Field(None, ge=0, le=1)
    prefix_padding_ms: int | None = Field(None, ge=0, le=2000)
    silence_duration_ms: int | None = Field(None, ge=100)
    create_response: bool | None = None
    interrupt_response: bool | None = None
    idle_timeout_ms: int | None = None


class FormatIn(_Strict):
    type: Literal["audio/pcm", "audio/pcmu", "audio/pcma"] = "audio/pcm"
    rate: int | None = Field(None, ge=8000, le=48000)


class TranscriptionIn(_Strict):
    model: str | None = None
    language: str | None = None
    prompt: str | None = Field(None, max_length=MAX_PROMPT_CHARS)


class NoiseReductionIn(_Strict):
    type: Literal["near_field", "far_field"] | None = None
    strength: float | None = None


class AudioInputIn(_Strict):
    format: FormatIn | None = None
    transcription: TranscriptionIn | None = None
    turn_detection: ServerVadIn | None = None
    noise_reduction: NoiseReductionIn | None = None


class AudioIn(_Strict):
    input: AudioInputIn | None = None


class SessionIn(_Strict):
    type: Literal["transcription"]
    audio: AudioIn | None = None
    include: list[Literal["item.input_audio_transcription.logprobs"]] | None = None


class SessionUpdateIn(_Strict):
    type: Literal["session.update"]
    event_id: str | None = None
    session: SessionIn


class AppendIn(_Strict):
    type: Literal["input_audio_buffer.append"]
    event_id: str | None = None
    audio: str


class BufferIn(_Strict):
    type: Literal["input_audio_buffer.commit", "input_audio_buffer.clear"]
    event_id: str | None = None


_PYDANTIC_CODES = {"extra_forbidden": "unknown_parameter", "missing": "missing_required_parameter"}
Schema = TypeVar("Schema", bound=BaseModel)


def validated(schema: type[Schema], payload: dict[str, Any]) -> Schema:
    """``payload`` as ``schema``; the first problem as an :class:`EventError` in OpenAI's terms."""
    try:
        return schema.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first.get("loc", ()))
        kind = first.get("type", "")
        code = _PYDANTIC_CODES.get(kind, "invalid_type" if kind.endswith("_type") else "invalid_value")
        if code == "unknown_parameter":
            message = f"Unknown parameter: '{param}'."
        else:
            message = f"Invalid value for '{param}': {first.get('msg', 'invalid')}."
        raise EventError(message, code, param) from exc


# The session


@dataclass(frozen=True)
class TurnDetection:
    """Server VAD: the stream's endpointing (``threshold``: Silero VAD's speech probability)."""

    silence_duration_ms: int
    prefix_padding_ms: int = 300
    threshold: float = 0.5


@dataclass(frozen=True)
class SessionConfig:
    """A transcription session's effective configuration."""

    model: str
    turn_detection: TurnDetection | None
    format: str = PCM
    rate: int = 24000
    language: str | None = None
    prompt: str = ""
    include: tuple[str, ...] = ()
    id: str = field(default_factory=lambda: "sess_" + uuid.uuid4().hex[:24])

    @property
    def wire_rate(self) -> int:
        """The sample rate of the PCM16 the session's audio becomes (G.711 is 8 kHz)."""
        return self.rate if self.format == PCM else G711_RATE

    def audio_settings(self) -> tuple[object, ...]:
        """What the stream session is built from (its audio, turn detection and the prompt its
        finals' second pass reads): a change needs a new one."""
        return (self.format, self.rate, self.turn_detection, self.prompt)


@dataclass(frozen=True)
class Limits:
    """What this server accepts: model names, languages and the endpointing bounds."""

    models: list[str]
    languages: frozenset[str]
    silence_ms: int  # the default silence_duration_ms
    max_silence_ms: int
    threshold: float = 0.5  # the default threshold


def updated(config: SessionConfig, update: SessionIn, limits: Limits) -> SessionConfig:
    """``config`` with the fields present in ``update``; raises :class:`EventError`."""
    audio = update.audio.input if update.audio and update.audio.input else None
    if update.include is not None:
        config = replace(config, include=tuple(update.include))
    if audio is None:
        return config
    if audio.format is not None:
        fmt = audio.format
        if fmt.type != PCM and fmt.rate not in (None, G711_RATE):
            raise EventError(f"{fmt.type} is 8000 Hz", param="session.audio.input.format.rate")
        config = replace(config, format=fmt.type, rate=(fmt.rate or 24000) if fmt.type == PCM else G711_RATE)
    if audio.transcription is not None:
        config = _with_transcription(config, audio.transcription, limits)
    if "turn_detection" in audio.model_fields_set:
        config = replace(config, turn_detection=_turn_detection(config.turn_detection, audio.turn_detection, limits))
    return config


def _with_transcription(config: SessionConfig, given: TranscriptionIn, limits: Limits) -> SessionConfig:
    param = "session.audio.input.transcription"
    if given.model is not None and given.model not in limits.models:
        served = ", ".join(limits.models)
        raise EventError(f"model {given.model!r} is not served here; use one of: {served}", param=f"{param}.model")
    if given.language and given.language.lower() not in limits.languages:
        message = f"language {given.language!r} is not supported; this model transcribes English ('en')"
        raise EventError(message, param=f"{param}.language")
    return replace(
        config,
        model=given.model or config.model,
        language=given.language if "language" in given.model_fields_set else config.language,
        prompt=given.prompt or "",
    )


def _turn_detection(current: TurnDetection | None, given: ServerVadIn | None, limits: Limits) -> TurnDetection | None:
    if given is None:
        return None
    base = current or TurnDetection(limits.silence_ms, threshold=limits.threshold)
    silence = given.silence_duration_ms or base.silence_duration_ms
    if silence > limits.max_silence_ms:
        message = f"silence_duration_ms exceeds this server's limit of {limits.max_silence_ms}"
        raise EventError(message, param="session.audio.input.turn_detection.silence_duration_ms")
    padding = base.prefix_padding_ms if given.prefix_padding_ms is None else given.prefix_padding_ms
    threshold = base.threshold if given.threshold is None else given.threshold
    return TurnDetection(silence, max(MIN_PREFIX_PADDING_MS, padding), threshold)


def session_json(config: SessionConfig) -> dict[str, Any]:
    """The session object of ``session.created`` / ``session.updated``."""
    fmt: dict[str, Any] = {"type": config.format, **({"rate": config.rate} if config.format == PCM else {})}
    vad = config.turn_detection
    turn: dict[str, Any] | None = None
    if vad is not None:
        turn = {
            "type": "server_vad",
            "threshold": vad.threshold,
            "prefix_padding_ms": vad.prefix_padding_ms,
            "silence_duration_ms": vad.silence_duration_ms,
        }
    transcription = {"model": config.model, "language": config.language, "prompt": config.prompt}
    return {
        "type": "transcription",
        "object": "realtime.transcription_session",
        "id": config.id,
        "audio": {
            "input": {"format": fmt, "transcription": transcription, "noise_reduction": None, "turn_detection": turn}
        },
        "include": list(config.include),
    }


# Audio


def _ulaw_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    magnitude = (((u & 0x0F) << 3) + 0x84) << ((u >> 4) & 0x07)
    return np.where(u & 0x80, 0x84 - magnitude, magnitude - 0x84).astype("<i2")


def _alaw_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    mantissa, exponent = a & 0x0F, (a >> 4) & 0x07
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    return np.where(a & 0x80, magnitude, -magnitude).astype("<i2")


G711 = {PCMU: _ulaw_table(), PCMA: _alaw_table()}


def pcm16(audio: str, fmt: str) -> bytes:
    """The PCM16 (little-endian) bytes of an append's base64 ``audio`` in the session's format."""
    try:
        data = base64.b64decode(audio, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EventError("Invalid 'audio': expected base64-encoded audio bytes.", param="audio") from exc
    table = G711.get(fmt)
    return data if table is None else table[np.frombuffer(data, dtype=np.uint8)].tobytes()


# Server events


def event(type_: str, **fields: Any) -> dict[str, Any]:
    """A server event: its type, a fresh ``event_id``, then ``fields``."""
    return {"type": type_, "event_id": "event_" + uuid.uuid4().hex[:24], **fields}


def error_event(
    message: str, code: str | None, param: str | None = None, event_id: str | None = None, type_: str = ""
) -> dict[str, Any]:
    """An ``error`` event in OpenAI's shape; ``event_id`` names the client event at fault."""
    error = {"type": type_ or "invalid_request_error", "code": code, "message": message, "param": param}
    return event("error", error={**error, "event_id": event_id})


def problem_event(problem: Problem) -> dict[str, Any]:
    """The ``error`` event before a close: the type and code of the error table's ``problem``."""
    return error_event(problem.message, str(problem.code), type_=problem.type)


@dataclass
class _Item:
    id: str
    start_ms: int
    held: list[str] = field(default_factory=list)  # finals already in the item (long buffers are cut)
    sent: str = ""  # the text of the deltas sent


class ItemTracker:
    """The conversation items of one session, from its stream session's partials and finals.

    A stream session's times count from its own start; ``offset_ms`` (the audio appended before
    it) makes them session times. Deltas only ever extend: a partial contributes the words before
    its last (which may still grow) when they continue what was sent. The item's ``completed``
    transcript is the final pass over its audio; the deltas add up to it unless that pass changed
    a word the partials had shown.
    """

    def __init__(self) -> None:
        self.item: _Item | None = None
        self.previous: str | None = None
        self.offset_ms = 0

    def _ms(self, seconds: float) -> int:
        return self.offset_ms + round(seconds * 1000)

    def _open(self, start_s: float, vad: bool) -> list[dict[str, Any]]:
        if self.item is not None:
            return []
        self.item = _Item("item_" + uuid.uuid4().hex[:24], self._ms(start_s))
        if not vad:
            return []
        return [event("input_audio_buffer.speech_started", audio_start_ms=self.item.start_ms, item_id=self.item.id)]

    def partial(self, partial: Partial, vad: bool) -> list[dict[str, Any]]:
        """A stream partial: the item's speech start (server VAD), and a delta if words became stable."""
        events = self._open(partial.start, vad)
        assert self.item is not None
        stable = " ".join([*self.item.held, *partial.text.split()[:-1]])
        return events + self._delta(stable)

    def hold(self, final: Final) -> None:
        """A final inside a manually committed buffer (a long buffer is transcribed in pieces)."""
        self._open(final.start, vad=False)
        assert self.item is not None
        if final.text:
            self.item.held.append(final.text)

    def vad_final(self, final: Final) -> list[dict[str, Any]]:
        """A stream final under server VAD: the item's speech stop, commit and transcript."""
        events = self._open(final.start, vad=True)
        assert self.item is not None
        item_id = self.item.id
        events.append(event("input_audio_buffer.speech_stopped", audio_end_ms=self._ms(final.end), item_id=item_id))
        events.append(self.committed())
        return events + self.completed([final.text], final.end - final.start)

    def committed(self) -> dict[str, Any]:
        """The ``committed`` event of the item in progress (a new, empty one if none)."""
        if self.item is None:
            self.item = _Item("item_" + uuid.uuid4().hex[:24], self.offset_ms)
        previous, self.previous = self.previous, self.item.id
        return event("input_audio_buffer.committed", previous_item_id=previous, item_id=self.item.id)

    def completed(self, texts: list[str], seconds: float) -> list[dict[str, Any]]:
        """The item's last delta and its ``completed`` transcript; the item is done."""
        item = self.item
        assert item is not None
        transcript = " ".join(t for t in [*item.held, *texts] if t)
        self.item = None
        usage = {"type": "duration", "seconds": round(max(0.0, seconds), 3)}
        done = event(
            "conversation.item.input_audio_transcription.completed",
            item_id=item.id,
            content_index=0,
            transcript=transcript,
            usage=usage,
        )
        return [*self._delta(transcript, item), done]

    def clear(self) -> None:
        """The buffer was cleared: the item in progress is dropped."""
        self.item = None

    def _delta(self, text: str, item: _Item | None = None) -> list[dict[str, Any]]:
        item = item or self.item
        assert item is not None
        sent = item.sent
        if len(text) <= len(sent) or not (not sent or text.startswith(sent + " ")):
            return []
        item.sent = text
        return [
            event(
                "conversation.item.input_audio_transcription.delta",
                item_id=item.id,
                content_index=0,
                delta=text[len(sent) :],
            )
        ]
