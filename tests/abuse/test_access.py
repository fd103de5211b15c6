"""Access control: API keys on every route but the probes, per-key limits, CORS and WebSocket origins."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import websockets
from fastapi import FastAPI
from fastapi.routing import APIRoute, APIWebSocketRoute
from fastapi.testclient import TestClient
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.testclient import WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from app.api_keys import KeyConfigError, KeyRing
from app.client import AsrClient, StreamError
from app.client.cli import main as cli
from app.config import Settings
from app.main import create_app
from app.rate_limit import StreamCounts, TokenBuckets
from tests.conftest import wait_ready
from tests.integration.test_stream import stream_settings, wait_for_ready
from tests.streaming_support import ToneFactory, live_server, spell
from tests.support import FakeFactory, tone, wav_bytes

KEY = "k-3f9a1c6e2b7d4f8a0c5e9b1d7a3f6c2e"
OTHER_KEY = "k-other-8b2e6d4a1f9c3e7b5d0a2c4f"
PROBES = {"/healthz", "/readyz"}


def make_client(fake: FakeFactory, **overrides: Any) -> TestClient:
    settings = Settings(**{"warmup": False, "max_wait_ms": 5, "log_json": False, **overrides})
    return TestClient(create_app(settings, recognizer_factory=fake), raise_server_exceptions=False)


@pytest.fixture
def keyed(fake: FakeFactory) -> Iterator[TestClient]:
    with make_client(fake, api_keys=f"{KEY}, {OTHER_KEY}") as client:
        wait_ready(client)
        yield client


def bearer(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def upload() -> dict[str, Any]:
    return {"files": {"file": ("a.wav", wav_bytes(tone(1.5)), "audio/wav")}}


def flat_routes(routes: list[BaseRoute], prefix: str = "") -> Iterator[tuple[str, BaseRoute]]:
    """(full path, route) of every route, those of included routers too."""
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI's include_router keeps the router
        if included is not None:
            context = getattr(route, "include_context", None)
            yield from flat_routes(included.routes, prefix + getattr(context, "prefix", ""))
        else:
            yield prefix + getattr(route, "path", ""), route


def http_calls(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path) of every HTTP route and mount of the app, path parameters filled in."""
    calls = []
    for full_path, route in flat_routes(app.routes):
        path = re.sub(r"\{[^}]+\}", "x", full_path)
        if isinstance(route, APIRoute | Route):
            calls += [(method, path) for method in sorted(route.methods or ())]
        elif isinstance(route, Mount):
            calls.append(("GET", f"{path}/app.js"))
        elif not isinstance(route, APIWebSocketRoute | WebSocketRoute):
            raise AssertionError(f"a route of an unknown kind: {route!r}")
    return calls


def websocket_paths(app: FastAPI) -> list[str]:
    return [path for path, route in flat_routes(app.routes) if isinstance(route, APIWebSocketRoute | WebSocketRoute)]


def is_public(path: str) -> bool:
    return path in PROBES


def assert_refused(response: Any, code: str) -> None:  # the test client's response
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    if response.request.method != "HEAD":  # a HEAD answer has no body
        assert response.json()["error"]["type"] == "authentication_error"
        assert response.json()["error"]["code"] == code


def finish(ws: Any) -> None:
    """End an admitted stream with eof; it must close normally."""
    ws.send_json({"type": "eof"})
    with pytest.raises(WebSocketDisconnect) as closed:
        while True:
            ws.receive_json()
    assert closed.value.code == 1000


def closed_with(client: TestClient, path: str, **kwargs: Any) -> tuple[dict[str, Any], int]:
    """The error message and close code of a WebSocket the server accepts and then closes."""
    with client.websocket_connect(path, **kwargs) as ws:
        message = ws.receive_json()
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    return message, closed.value.code


def test_no_route_but_the_probes_answers_without_a_valid_key(keyed: TestClient) -> None:
    app: FastAPI = keyed.app  # type: ignore[assignment]
    calls = http_calls(app)
    covered = {path for _, path in calls}
    assert {"/transcribe", "/v1/audio/transcriptions", "/v1/models", "/metrics", "/docs", "/openapi.json"} <= covered
    assert websocket_paths(app) == ["/stream", "/v1/realtime"]
    for method, path in [*calls, ("GET", "/no-such-route"), ("POST", "/v1/chat/completions")]:
        missing = keyed.request(method, path)
        if is_public(path):
            assert missing.status_code == 200, (method, path, missing.status_code)
            continue
        assert_refused(missing, "missing_api_key")
        assert_refused(keyed.request(method, path, headers=bearer("wrong")), "invalid_api_key")
        assert_refused(keyed.request(method, path, headers={"Authorization": KEY}), "missing_api_key")
    for path in websocket_paths(app):
        for kwargs in ({}, {"headers": bearer("wrong")}, {"subprotocols": ["asr", "bearer.wrong"]}):
            message, code = closed_with(keyed, path, **kwargs)
            assert code == 4401 and message["type"] == "error", kwargs
            assert message["code"] in ("missing_api_key", "invalid_api_key")


def test_every_route_works_with_a_valid_key(keyed: TestClient) -> None:
    app: FastAPI = keyed.app  # type: ignore[assignment]
    for method, path in http_calls(app):
        response = keyed.request(method, path, headers=bearer(OTHER_KEY))
        assert response.status_code not in (401, 403, 404, 405), (method, path, response.status_code)
    answer = keyed.post("/transcribe", headers=bearer(), **upload())
    assert answer.status_code == 200 and answer.json()["text"] == "hello world"
    assert keyed.get("/v1/models", headers={"authorization": f"bearer {KEY}"}).status_code == 200
    for kwargs in ({"headers": bearer()}, {"subprotocols": ["asr", f"bearer.{KEY}"]}):
        with keyed.websocket_connect("/stream", **kwargs) as ws:
            if "subprotocols" in kwargs:
                assert ws.accepted_subprotocol == "asr"  # a browser fails the connection without it
            finish(ws)


def test_a_file_of_hashed_and_plain_keys(fake: FakeFactory, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    hashed = hashlib.sha256(KEY.encode()).hexdigest()
    keys.write_text(f"# team keys\n\nsha256:{hashed}  # alice\n  {OTHER_KEY}\n")
    with make_client(fake, api_keys_file=keys) as client:
        wait_ready(client)
        assert client.get("/v1/models", headers=bearer()).status_code == 200
        assert client.get("/v1/models", headers=bearer(OTHER_KEY)).status_code == 200
        assert_refused(client.get("/v1/models", headers=bearer(hashed)), "invalid_api_key")
        assert_refused(client.get("/v1/models", headers=bearer(f"sha256:{hashed}")), "invalid_api_key")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("# only a comment\n", "holds no key"),
        (f"sha256:{'ab' * 31}\n", "64 hex digits"),
        (f"{KEY} {OTHER_KEY}\n", "one word"),
    ],
)
def test_an_unusable_keys_file_stops_the_start_without_showing_a_key(
    tmp_path: Path, content: str, problem: str
) -> None:
    keys = tmp_path / "keys"
    keys.write_text(content)
    with pytest.raises(KeyConfigError, match=problem) as error:
        KeyRing.from_settings(Settings(api_keys_file=keys))
    assert KEY not in str(error.value)
    with pytest.raises(KeyConfigError, match="cannot read"):
        KeyRing.from_settings(Settings(api_keys_file=tmp_path / "missing"))


def test_keys_never_reach_the_log(keyed: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    wrong = "k-wrong-5e1b9d3f7a2c4e6b8d0f"
    caplog.set_level(logging.DEBUG)
    keyed.get("/v1/models", headers=bearer())
    keyed.get("/v1/models", headers=bearer(wrong))
    keyed.get("/metrics", headers=bearer(wrong))
    closed_with(keyed, "/stream", subprotocols=["asr", f"bearer.{wrong}"])
    with keyed.websocket_connect("/stream", subprotocols=["asr", f"bearer.{KEY}"]) as ws:
        finish(ws)
    assert "refused GET '/v1/models'" in caplog.text  # the refusals are logged...
    for secret in (KEY, wrong):  # ...but no key, nor its digest
        assert secret not in caplog.text
        assert hashlib.sha256(secret.encode()).hexdigest() not in caplog.text


def test_the_rate_limit_answers_429_with_retry_after_and_spares_the_probes(fake: FakeFactory) -> None:
    with make_client(fake, api_keys=f"{KEY},{OTHER_KEY}", rate_limit_per_minute=6, rate_limit_burst=3) as client:
        wait_ready(client)
        assert [client.get("/v1/models", headers=bearer()).status_code for _ in range(3)] == [200] * 3
        limited = client.get("/v1/models", headers=bearer())
        assert limited.status_code == 429
        assert limited.headers["retry-after"] in ("9", "10")  # a token every 10 s
        assert limited.json()["error"]["type"] == "rate_limit_error"
        assert limited.json()["error"]["code"] == "rate_limited"
        message, code = closed_with(client, "/stream", headers=bearer())
        assert (code, message["code"]) == (1013, "rate_limited")
        assert client.get("/v1/models", headers=bearer(OTHER_KEY)).status_code == 200  # its own bucket
        assert all(client.get(p).status_code == 200 for p in ["/healthz", "/readyz"] * 10)


def test_token_buckets_refill_and_stay_bounded() -> None:
    now = [0.0]
    buckets = TokenBuckets(per_minute=60, burst=2, max_clients=3, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 1.0]
    now[0] = 0.5
    assert buckets.take("a") == pytest.approx(0.5)
    now[0] = 5.0
    assert buckets.take("a") == 0.0  # refilled, up to the burst
    for n in range(100):
        buckets.take(f"client-{n}")
    assert len(buckets) == 3


def test_streams_per_key_are_capped(fake: FakeFactory) -> None:
    with make_client(fake, api_keys=f"{KEY},{OTHER_KEY}", max_streams_per_key=1) as client:
        wait_ready(client)
        with client.websocket_connect("/stream", headers=bearer()) as first:
            message, code = closed_with(client, "/stream", subprotocols=["asr", f"bearer.{KEY}"])
            assert (code, message["code"]) == (1013, "too_many_streams_for_key")
            with client.websocket_connect("/stream", headers=bearer(OTHER_KEY)) as other:
                finish(other)
            finish(first)
        with client.websocket_connect("/stream", headers=bearer()) as again:  # the first one's slot is free
            finish(again)


def test_stream_counts_hold_only_open_clients() -> None:
    counts = StreamCounts(limit=2)
    assert counts.open("a") and counts.open("a") and not counts.open("a")
    counts.close("a")
    counts.close("a")
    assert counts["a"] == 0 and counts._open == {}


@pytest.mark.parametrize(
    ("access", "no_key", "with_key"), [("key", 401, 200), ("open", 200, 200), ("closed", 404, 404)]
)
def test_metrics_docs_and_demo_follow_their_access_settings(
    fake: FakeFactory, access: str, no_key: int, with_key: int
) -> None:
    settings = {"metrics_access": access, "docs_access": access, "demo_access": access}
    with make_client(fake, api_keys=KEY, **settings) as client:
        for path in ("/metrics", "/docs", "/redoc", "/openapi.json", "/", "/static/app.js"):
            assert client.get(path).status_code == no_key, path
            assert client.get(path, headers=bearer()).status_code == with_key, path
    with make_client(fake, metrics_access="key", docs_access="key") as client:  # no keys: "key" is open
        assert client.get("/metrics").status_code == 200
        assert client.get("/openapi.json").status_code == 200


def test_rate_limit_without_keys_is_per_address(fake: FakeFactory) -> None:
    with make_client(fake, rate_limit_per_minute=1, rate_limit_burst=2) as client:
        wait_ready(client)  # the probes are not limited
        assert [client.get("/v1/models").status_code for _ in range(3)] == [200, 200, 429]


def test_cors_preflight_from_a_listed_origin_only(fake: FakeFactory) -> None:
    with make_client(fake, api_keys=KEY, cors_origins="https://app.example.com") as client:
        ask = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
        allowed = client.options("/transcribe", headers={"Origin": "https://app.example.com", **ask})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
        other = client.options("/transcribe", headers={"Origin": "https://evil.example", **ask})
        assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
        answer = client.get("/v1/models", headers={"Origin": "https://app.example.com", **bearer()})
        assert answer.headers["access-control-allow-origin"] == "https://app.example.com"
        refused = client.get("/v1/models", headers={"Origin": "https://app.example.com"})
        assert refused.status_code == 401  # a browser page may read why
        assert refused.headers["access-control-allow-origin"] == "https://app.example.com"


@pytest.mark.parametrize(
    ("origin", "admitted"),
    [
        (None, True),  # not a browser
        ("http://testserver", True),  # the server's own origin (Host: testserver)
        ("https://app.example.com", True),  # listed
        ("https://evil.example", False),
        ("http://testserver:8080", False),  # another port is another origin
        ("null", False),  # a sandboxed frame or a file
    ],
)
def test_websocket_origins(fake: FakeFactory, origin: str | None, admitted: bool) -> None:
    headers = {"Origin": origin} if origin else {}
    with make_client(fake, cors_origins="https://app.example.com") as client:
        wait_ready(client)
        if admitted:
            with client.websocket_connect("/stream", headers=headers) as ws:
                finish(ws)
        else:
            with pytest.raises(WebSocketDenialResponse) as denied:
                client.websocket_connect("/stream", headers=headers).__enter__()
            assert denied.value.status_code == 403
            assert denied.value.json()["error"]["code"] == "origin_not_allowed"


def test_live_server_clients_with_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real server (uvicorn): the bundled client, the official OpenAI SDK and a cross-origin page."""
    audio = tmp_path / "talk.wav"
    audio.write_bytes(wav_bytes(spell("good day", tail_s=0.8)))
    settings = stream_settings(api_keys=KEY)
    with live_server(create_app(settings, recognizer_factory=ToneFactory())) as (base, _):
        wait_for_ready(base)
        url = f"http://{base}"
        assert AsrClient(url, api_key=KEY).transcribe(audio)["text"] == "good day"
        finals = asyncio.run(AsrClient(url, api_key=KEY).stream_file(audio))
        assert [f["text"] for f in finals] == ["good day"]
        with pytest.raises(httpx.HTTPStatusError, match="401"):
            AsrClient(url).transcribe(audio)
        cli(["--url", url, "--api-key", KEY, "transcribe", str(audio)])
        monkeypatch.setenv("ASR_API_KEY", KEY)
        cli(["--url", url, "stream", str(audio)])
        assert capsys.readouterr().out == "good day\n[   0.00 -    2.60] good day\n"
        with pytest.raises(SystemExit, match="401: the API key is not valid"):
            cli(["--url", url, "--api-key", "wrong", "transcribe", str(audio)])
        with pytest.raises(StreamError) as refused:
            asyncio.run(AsrClient(url, api_key="wrong").stream_file(audio))
        assert refused.value.code == 4401 and "not valid" in refused.value.message

        sdk = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=30)
        assert sdk.audio.transcriptions.create(model="whisper-1", file=audio.open("rb")).text == "good day"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).models.list()

        async def cross_origin() -> int:
            with pytest.raises(websockets.InvalidStatus) as denied:
                await websockets.connect(f"ws://{base}/stream", origin="https://evil.example")  # type: ignore[arg-type]
            return denied.value.response.status_code

        assert asyncio.run(cross_origin()) == 403


@pytest.mark.browser
def test_the_demo_page_takes_a_key(tmp_path: Path) -> None:
    """In headless Chromium (`make test-browser`): without a key the page shows the refusals; with
    one, uploads (bearer header) and the microphone (subprotocol) work."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="run `make test-browser` to install playwright")
    from tests.browser.test_demo_page import launch

    speech = tmp_path / "speech.wav"
    speech.write_bytes(wav_bytes(spell("hello world", lead_s=1.0, tail_s=1.5)))
    settings = stream_settings(api_keys=KEY, demo_access="open")
    with live_server(create_app(settings, recognizer_factory=ToneFactory())) as (base, _):
        wait_for_ready(base)
        with sync_api.sync_playwright() as playwright:
            browser = launch(playwright, speech)
            try:
                page = browser.new_page()
                page.goto(f"http://{base}/")
                page.set_input_files("#file", str(speech))
                page.click("#upload")
                sync_api.expect(page.locator("#upload-status")).to_contain_text("Error 401", timeout=10_000)
                page.click("#start")
                sync_api.expect(page.locator("#mic-status")).to_contain_text("needs an API key", timeout=10_000)
                page.fill("#api-key", KEY)
                page.click("#upload")
                sync_api.expect(page.locator("#upload-result")).to_have_text("hello world", timeout=20_000)
                page.click("#start")
                finals = page.locator("#transcript .final .text", has_text="hello world")
                sync_api.expect(finals.first).to_have_text("hello world", timeout=30_000)
                page.click("#stop")
                sync_api.expect(page.locator("#mic-status")).to_have_text("closed (1000)", timeout=20_000)
            finally:
                browser.close()
