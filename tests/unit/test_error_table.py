"""Every row of the error table renders the same status, type and code over HTTP, WebSocket
(``/stream``'s message and the Realtime API's event) and server-sent events."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from starlette.requests import ClientDisconnect

from app.asr import audio
from app.asr.beam import BeamOptionsError
from app.engine.batcher import QueueFull
from app.engine.engine import EngineUnavailable, NoLanguageModel, NoSecondPass, RequestTimeout
from app.errors import (
    ERROR_TABLE,
    ClientDisconnected,
    DeadlineExceeded,
    InvalidParameter,
    InvalidRequest,
    NotReady,
    NotServed,
    OriginNotAllowed,
    Overloaded,
    PayloadTooLarge,
    Problem,
    RateLimited,
    ServiceError,
    Unauthenticated,
    UnsupportedMediaType,
    describe,
    json_response,
    sse_event,
    ws_message,
)
from app.routers.openai import _sse
from app.routers.realtime_protocol import problem_event

# exception -> (status, type, code, close code, Retry-After): today's answers, written out by hand
# so that a change to the table shows here. ``code`` None: the code the exception was raised with.
EXPECTED: dict[type[BaseException], tuple[int, str, str | None, int | None, str | None]] = {
    ServiceError: (500, "server_error", None, 1011, None),
    InvalidRequest: (400, "invalid_request_error", None, 1008, None),
    InvalidParameter: (422, "invalid_request_error", "invalid_parameter", 1008, None),
    PayloadTooLarge: (413, "payload_too_large", None, 1009, None),
    UnsupportedMediaType: (415, "unsupported_media_type", None, 1003, None),
    Overloaded: (429, "overloaded", None, 1013, None),
    NotReady: (503, "service_unavailable", None, 1013, None),
    DeadlineExceeded: (504, "timeout", None, 1011, None),
    ClientDisconnected: (499, "client_closed_request", "client_disconnected", 1001, None),
    Unauthenticated: (401, "authentication_error", None, 4401, None),
    OriginNotAllowed: (403, "permission_error", None, None, None),
    NotServed: (404, "http_error", None, None, None),
    RateLimited: (429, "rate_limit_error", None, 1013, None),
    QueueFull: (429, "overloaded", "queue_full", 1013, "3"),
    EngineUnavailable: (503, "service_unavailable", "not_ready", 1013, "5"),
    RequestTimeout: (504, "timeout", "deadline_exceeded", 1011, None),
    NoLanguageModel: (400, "invalid_request_error", "no_language_model", 1008, None),
    NoSecondPass: (400, "invalid_request_error", "no_second_pass", 1008, None),
    BeamOptionsError: (422, "invalid_request_error", "invalid_parameter", 1008, None),
    audio.AudioError: (400, "invalid_request_error", "invalid_audio", 1008, None),
    audio.EmptyAudioError: (400, "invalid_request_error", "empty_body", 1008, None),
    audio.UndecodableAudioError: (400, "invalid_request_error", "undecodable_audio", 1008, None),
    audio.ZeroLengthAudioError: (400, "invalid_request_error", "zero_length_audio", 1008, None),
    audio.UnsupportedFormatError: (415, "unsupported_media_type", "unsupported_format", 1003, None),
    audio.AudioTooLongError: (413, "payload_too_large", "audio_too_long", 1009, None),
    ClientDisconnect: (499, "client_closed_request", "client_disconnected", 1001, None),
}


def build(kind: type[BaseException]) -> BaseException:
    """An instance of ``kind`` as the code raises it."""
    if kind is QueueFull:
        return QueueFull(2.6)
    if kind is ClientDisconnect:
        return ClientDisconnect()
    if issubclass(kind, InvalidParameter):
        return kind("beam_size: too big", param="beam_size")
    if issubclass(kind, ServiceError):
        return kind("a message", code="a_code")
    return kind("a message")


def test_every_row_has_an_expectation() -> None:
    assert set(ERROR_TABLE) == set(EXPECTED)


@pytest.mark.parametrize("kind", list(ERROR_TABLE), ids=lambda kind: kind.__name__)
def test_a_row_renders_alike_over_http_websocket_and_sse(kind: type[BaseException]) -> None:
    status, type_, code, close, retry_after = EXPECTED[kind]
    code = code or "a_code"
    problem = describe(build(kind))

    response = json_response(problem)
    http = json.loads(bytes(response.body))["error"]
    assert response.status_code == status
    assert response.headers.get("retry-after") == retry_after
    assert (http["type"], http["code"]) == (type_, code)

    stream = ws_message(problem)
    assert problem.close == close
    assert (stream["type"], stream["code"]) == ("error", code)
    assert (stream["error"]["type"], stream["error"]["code"]) == (type_, code)

    realtime = problem_event(problem)
    assert realtime["type"] == "error" and (realtime["error"]["type"], realtime["error"]["code"]) == (type_, code)

    wire = _sse(sse_event(problem))
    assert wire.startswith("data: ") and wire.endswith("\n\n")
    sse = json.loads(wire.removeprefix("data: "))
    assert sse["type"] == "error" and (sse["error"]["type"], sse["error"]["code"]) == (type_, code)

    messages = {http["message"], stream["message"], realtime["error"]["message"], sse["error"]["message"]}
    assert len(messages) == 1 and messages.pop()


def test_a_422_names_its_parameter_everywhere() -> None:
    problem = describe(InvalidParameter("beam_size: too big", param="beam_size"))
    assert json.loads(bytes(json_response(problem).body))["error"]["param"] == "beam_size"
    assert sse_event(problem)["error"]["param"] == "beam_size"
    assert describe(BeamOptionsError("too many hotwords")).error()["param"] is None


def test_an_unknown_exception_is_an_internal_error_with_its_id_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="app.errors"):
        try:
            raise RuntimeError("secret detail")
        except RuntimeError as exc:
            problem = describe(exc, "stream failed")
    error_id = problem.extra["id"]
    assert len(error_id) == 16 and error_id in problem.message
    assert (problem.status, problem.type, problem.code, problem.close) == (500, "server_error", "internal_error", 1011)
    for rendered in (problem.error(), ws_message(problem)["error"], problem_event(problem)["error"]):
        assert "secret" not in json.dumps(rendered)
    assert ws_message(problem)["error"]["id"] == sse_event(problem)["error"]["id"] == error_id
    (record,) = [r for r in caplog.records if error_id in r.getMessage()]
    assert record.exc_info is not None and "stream failed" in record.getMessage()


def test_rejections_are_counted_once_as_such() -> None:
    counted: list[tuple[str, ...]] = []

    class Counter:
        def __init__(self, family: str) -> None:
            self.family = family

        def labels(self, **labels: str) -> Any:
            counted.append((self.family, *labels.values()))
            return self

        def inc(self) -> None:
            pass

    class Metrics:
        errors = Counter("errors")
        rejected = Counter("rejected")

    describe(QueueFull(1.0)).record(Metrics())
    describe(ClientDisconnected("gone")).record(Metrics())
    assert counted == [("errors", "overloaded"), ("rejected", "queue_full"), ("rejected", "client_disconnected")]


def test_a_problem_is_what_every_renderer_reads() -> None:
    problem = Problem(429, "overloaded", "queue_full", "busy", 1013, {"Retry-After": "2"})
    assert json_response(problem).headers["retry-after"] == "2"
    assert ws_message(problem)["error"] == sse_event(problem)["error"] == problem.error()
