"""Probes, metrics, model listing, and the backpressure and deadline answers."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.conftest import wait_ready
from tests.support import FakeFactory, tone, wait_for, wav_bytes

GOOD = {"file": ("a.wav", wav_bytes(tone()))}


def test_readyz_is_503_until_the_model_is_loaded() -> None:
    fake = FakeFactory(load_delay_s=30)
    with TestClient(create_app(Settings(warmup=False), recognizer_factory=fake)) as client:
        assert client.get("/healthz").status_code == 200
        not_ready = client.get("/readyz")
        assert not_ready.status_code == 503 and not_ready.json()["status"] == "loading"
        early = client.post("/transcribe", files=GOOD)
        assert early.status_code == 503 and early.json()["error"]["code"] == "not_ready"
        assert early.headers["retry-after"]
        assert "asr_model_ready 0.0" in client.get("/metrics").text
        fake.release.set()
        wait_ready(client)
        assert client.get("/readyz").json() == {"status": "ready"}
        assert client.post("/transcribe", files=GOOD).status_code == 200


def test_failed_model_load_keeps_readyz_503() -> None:
    def broken(settings: Settings, hardware: object):
        raise RuntimeError("no such model")

    with TestClient(create_app(Settings(warmup=False), recognizer_factory=broken)) as client:
        wait_for(lambda: client.get("/readyz").json()["status"] == "failed", 5, "the failed load was not reported")
        response = client.get("/readyz")
        assert response.status_code == 503 and response.json()["status"] == "failed"
        assert "no such model" not in response.text


def test_metrics_after_a_request(client: TestClient) -> None:
    assert client.post("/transcribe", files=GOOD).status_code == 200
    text = client.get("/metrics").text
    for series in (
        'asr_http_requests_total{method="POST",route="/transcribe",status="200"} 1.0',
        'asr_http_request_duration_seconds_count{route="/transcribe"} 1.0',
        "asr_audio_processed_seconds_total 2.0",
        "asr_inference_duration_seconds_count 1.0",
        "asr_batch_size_count 1.0",
        "asr_queue_wait_seconds_count 1.0",
        "asr_model_ready 1.0",
        "asr_http_requests_in_progress 0.0",
    ):
        assert series in text, series


def test_v1_models_describes_the_loaded_model(client: TestClient) -> None:
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    model, *aliases = body["data"]  # then ASR_MODEL_ALIASES, each with alias_of
    assert [a["alias_of"] for a in aliases] == ["fake-model"] * len(aliases)
    assert model["id"] == "fake-model" and model["object"] == "model"
    assert model["vocab_size"] == 29 and model["sample_rate"] == 16000
    assert model["precision"] == "fp32" and model["device"] == "cpu"
    assert model["frame_rate"] == 25.0
    assert model["decoders"] == ["greedy"] and model["default_decoder"] == "greedy"


def test_full_queue_answers_429_with_retry_after(fake: FakeFactory) -> None:
    settings = Settings(warmup=False, max_queue_audio_seconds=3.0, max_batch_size=1, max_wait_ms=0, model_workers=1)
    gate = threading.Event()
    fake.model.gate = gate
    with TestClient(create_app(settings, recognizer_factory=fake), raise_server_exceptions=False) as client:
        wait_ready(client)
        with ThreadPoolExecutor(4) as pool:
            running = pool.submit(client.post, "/transcribe", files=GOOD)  # holds the model
            wait_for(lambda: fake.model.batch_sizes == [1], 10, "the first request did not reach the model")
            queued = pool.submit(client.post, "/transcribe", files=GOOD)  # waits in the queue: 2 s
            wait_for(lambda: metric(client, "asr_queue_depth_audio_seconds") == 2.0, 10, "the second was not queued")
            rejected = client.post("/transcribe", files=GOOD)  # 2 + 2 > 3 s
            gate.set()
            assert running.result().status_code == 200 and queued.result().status_code == 200
        assert rejected.status_code == 429
        assert rejected.json()["error"]["code"] == "queue_full"
        assert int(rejected.headers["retry-after"]) >= 1
        assert 'asr_rejected_requests_total{reason="queue_full"} 1.0' in client.get("/metrics").text
        assert client.post("/transcribe", files=GOOD).status_code == 200


def test_deadline_answers_504_and_server_recovers(fake: FakeFactory) -> None:
    settings = Settings(warmup=False, request_timeout_s=0.2)
    fake.model.delay_s = 0.6
    with TestClient(create_app(settings, recognizer_factory=fake), raise_server_exceptions=False) as client:
        wait_ready(client)
        response = client.post("/transcribe", files=GOOD)
        assert response.status_code == 504 and response.json()["error"]["code"] == "deadline_exceeded"
        fake.model.delay_s = 0.0
        # The timed-out batch holds the model until it finishes; then requests succeed again.
        wait_for(lambda: client.post("/transcribe", files=GOOD).status_code == 200, 10, "the server did not recover")


def test_recording_longer_than_the_queue_is_fed_piece_by_piece(fake: FakeFactory) -> None:
    settings = Settings(warmup=False, max_queue_audio_seconds=60.0, max_batch_size=2, chunk_seconds=10.0)
    with TestClient(create_app(settings, recognizer_factory=fake), raise_server_exceptions=False) as client:
        wait_ready(client)
        long_wave = np.concatenate([tone(2.0), np.zeros(16000 * 8, np.float32)] * 12)  # 120 s, 12 pieces
        response = client.post("/transcribe", files={"file": ("long.wav", wav_bytes(long_wave))})
        assert response.status_code == 200, response.text
        words = response.json()["text"].split()
        assert len(words) >= 24 and set(words) == {"hello", "world"}  # the fake speaks once per piece
        assert max(fake.model.batch_sizes) <= 2 and sum(fake.model.batch_sizes) == len(words) // 2


def test_model_workers_run_batches_side_by_side(fake: FakeFactory) -> None:
    settings = Settings(warmup=False, max_batch_size=1, max_wait_ms=0, model_workers=2)
    gate = threading.Event()
    fake.model.gate = gate
    with TestClient(create_app(settings, recognizer_factory=fake)) as client:
        wait_ready(client)
        fake.model.batch_sizes.clear()
        with ThreadPoolExecutor(3) as pool:
            requests = [pool.submit(client.post, "/transcribe", files=GOOD) for _ in range(3)]
            wait_for(lambda: fake.model.batch_sizes == [1, 1], 10, "two batches did not reach the model at once")
            gate.set()
            assert all(r.result().json()["text"] == "hello world" for r in requests)
        assert fake.model.batch_sizes == [1, 1, 1]


def metric(client: TestClient, name: str) -> float:
    line = next(line for line in client.get("/metrics").text.splitlines() if line.startswith(name + " "))
    return float(line.split()[1])


def steady(client: TestClient, fake: FakeFactory, expected: tuple[list[int], float]) -> bool:
    """True when (the model's batch sizes, the queue depth) is ``expected`` now and 0.3 s later."""

    def state() -> tuple[list[int], float]:
        return list(fake.model.batch_sizes), metric(client, "asr_queue_depth_items")

    if state() != expected:
        return False
    time.sleep(0.3)
    return state() == expected


def test_per_item_batches_reach_the_model_one_by_one_with_a_batch_ready_ahead() -> None:
    fake = FakeFactory(pads_batches=False)  # as on a CPU: no padding, one item per model call
    settings = Settings(warmup=False, max_batch_size=1, max_wait_ms=0, model_workers=1)
    gate = threading.Event()
    fake.model.gate = gate
    with TestClient(create_app(settings, recognizer_factory=fake)) as client:
        wait_ready(client)
        with ThreadPoolExecutor(3) as pool:
            requests = [pool.submit(client.post, "/transcribe", files=GOOD) for _ in range(3)]
            # one batch in the model, one handed over ahead of the worker, one in the queue
            wait_for(lambda: steady(client, fake, ([1], 1.0)), 10, "expected one batch in the model, one item queued")
            assert metric(client, "asr_http_requests_in_progress") == 3
            gate.set()
            assert all(r.result().json()["text"] == "hello world" for r in requests)

    fake = FakeFactory(pads_batches=False)
    settings = Settings(warmup=False, max_batch_size=4, max_wait_ms=300, model_workers=1)
    with TestClient(create_app(settings, recognizer_factory=fake)) as client:
        wait_ready(client)
        with ThreadPoolExecutor(4) as pool:
            requests = [pool.submit(client.post, "/transcribe", files=GOOD) for _ in range(4)]
            assert all(r.result().json()["text"] == "hello world" for r in requests)
        assert fake.model.batch_sizes == [1, 1, 1, 1]  # the model saw each item alone
        assert metric(client, "asr_batch_size_count") < 4  # though the batcher grouped them
