"""A client that hangs up has its queued audio dropped before it reaches the model.

Runs the app under a real uvicorn server on a loopback port (in a thread), because only a real
connection can be closed mid-request.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from app.config import Settings
from app.main import create_app
from tests.support import FakeFactory, tone, wait_for, wav_bytes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def live(fake: FakeFactory) -> Iterator[tuple[str, FakeFactory]]:
    app = create_app(Settings(warmup=False, max_batch_size=1, max_wait_ms=0, model_workers=1), recognizer_factory=fake)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.05)
    yield base, fake
    server.should_exit = True
    thread.join(timeout=30)


def test_disconnected_clients_work_is_dropped(live: tuple[str, FakeFactory]) -> None:
    base, fake = live
    gate = threading.Event()
    fake.model.gate = gate
    fake.model.batch_sizes.clear()
    short = wav_bytes(tone(1.5))
    results: dict[str, int] = {}

    def hold_the_model() -> None:
        results["first"] = httpx.post(f"{base}/transcribe", files={"file": ("a.wav", short)}, timeout=30).status_code

    first = threading.Thread(target=hold_the_model)
    first.start()
    wait_for(lambda: fake.model.batch_sizes == [1], 10, "the first request did not reach the (gated) model")
    with pytest.raises(httpx.ReadTimeout):  # the second waits in the queue; its client gives up
        httpx.post(f"{base}/transcribe", files={"file": ("b.wav", wav_bytes(tone(2.5)))}, timeout=1.0)
    wait_for(
        lambda: 'asr_rejected_requests_total{reason="client_disconnected"} 1.0' in httpx.get(f"{base}/metrics").text,
        10,
        "the server did not notice the closed connection",
    )
    gate.set()
    first.join(timeout=30)
    assert results["first"] == 200
    assert httpx.post(f"{base}/transcribe", files={"file": ("c.wav", short)}, timeout=30).status_code == 200
    assert fake.model.batch_sizes == [1, 1], "the abandoned request must not reach the model"
    metrics = httpx.get(f"{base}/metrics").text
    assert 'asr_rejected_requests_total{reason="client_disconnected"} 1.0' in metrics
