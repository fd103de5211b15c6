"""Graceful shutdown of the real server: after SIGTERM it refuses new work, finishes the work it
had accepted (requests get their answers, live streams their finals and a 1001 close), and exits 0
within ASR_SHUTDOWN_GRACE_S."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.e2e.server import ServerProcess, random_bundle, running_server
from tests.support import tone, wait_for, wav_bytes

ROOT = Path(__file__).resolve().parents[2]
GRACE_S = 20.0
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_bundle(tmp_path_factory.mktemp("model") / "random-en-small")


def refuses_new_work(server: ServerProcess) -> bool:
    """True once a new connection gets 503 from /readyz and /transcribe, or is not accepted at all."""
    try:
        ready = httpx.get(f"{server.base_url}/readyz", timeout=2)
        work = httpx.post(
            f"{server.base_url}/transcribe",
            content=wav_bytes(tone(0.5)),
            headers={"Content-Type": "audio/wav"},
            timeout=5,
        )
    except httpx.TransportError:
        return True
    return ready.status_code == 503 and work.status_code == 503


def terminate(server: ServerProcess) -> float:
    """Send SIGTERM, check that new work is refused from then on; return when it was sent."""
    sent = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: refuses_new_work(server), 5, "the server still takes new work 5 s after SIGTERM", 0.05)
    return sent


def assert_clean_exit(server: ServerProcess, signalled: float) -> None:
    try:
        code = server.proc.wait(timeout=GRACE_S + 10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the server was still running {GRACE_S + 10:g} s after SIGTERM:\n{server.output()}")
    took = time.monotonic() - signalled
    assert code == 0, f"exit code {code}:\n{server.output()}"
    assert took <= GRACE_S, f"exit took {took:.1f} s, more than ASR_SHUTDOWN_GRACE_S={GRACE_S:g}"


def assert_transcribed(status: int, body: bytes | str, seconds: float) -> None:
    assert status == 200, f"{status}: {body!r}"
    reply = json.loads(body)
    assert isinstance(reply["text"], str) and reply["duration"] == pytest.approx(seconds, abs=0.1)


# ---------------------------------------------------------------------------------------------
# Work accepted before SIGTERM: a live stream and requests queued in the batcher.

REQUESTS = 6
REQUEST_AUDIO_S = 90.0  # one piece each (ASR_CHUNK_SECONDS=120): seconds of queue on one thread, even when idle
STREAM_AUDIO_S = 3.0


class LiveStream:
    """A WS /stream session that has sent audio but no eof: still open when SIGTERM comes."""

    def __init__(self, ws: ClientConnection, seconds: float) -> None:
        self.ws = ws
        pcm = (tone(seconds) * 32767).astype("<i2").tobytes()
        ws.send(json.dumps({"type": "config", "sample_rate": 16000, "encoding": "pcm_s16le"}))
        chunk = 2 * 3200  # 0.2 s of 16-bit samples
        for offset in range(0, len(pcm), chunk):
            ws.send(pcm[offset : offset + chunk])

    def finish(self) -> tuple[list[dict[str, Any]], int | None]:
        """The messages received until the server closed the stream, and its close code."""
        messages = []
        try:
            while True:
                messages.append(json.loads(self.ws.recv(timeout=GRACE_S)))
        except ConnectionClosed as closed:
            return messages, closed.rcvd.code if closed.rcvd else None


def batch_items(server: ServerProcess) -> float:
    """Items queued plus items already run (one per batch with ASR_MAX_BATCH_SIZE=1)."""
    return server.metric("asr_queue_depth_items") + server.metric("asr_batch_size_sum")


def settled(server: ServerProcess) -> bool:
    """True when the queue is empty and no batch ran for 0.3 s (the stream has caught up)."""
    before = batch_items(server)
    time.sleep(0.3)
    return server.metric("asr_queue_depth_items") == 0 and batch_items(server) == before


def test_sigterm_finishes_a_stream_and_queued_requests_and_exits_0(bundle: Path, tmp_path: Path) -> None:
    audio = wav_bytes(tone(REQUEST_AUDIO_S))
    settings = {
        "ASR_RUNTIME": "torch",
        "ASR_MAX_BATCH_SIZE": "1",
        "ASR_MODEL_WORKERS": "1",  # one batch at a time: the others wait in the queue
        "ASR_NUM_THREADS": "1",
        "ASR_CHUNK_SECONDS": "120",
        "ASR_SHUTDOWN_GRACE_S": f"{GRACE_S:g}",
        "ASR_STREAM_VAD": "energy",  # the stream's tone is loud, not speech: Silero would hear none
    }
    with (
        running_server(bundle, tmp_path, **settings) as server,
        ThreadPoolExecutor(REQUESTS) as pool,
        connect(f"ws://127.0.0.1:{server.port}/stream", open_timeout=10) as ws,
    ):
        stream = LiveStream(ws, STREAM_AUDIO_S)
        wait_for(lambda: server.metric("asr_active_streams") == 1 and settled(server), 30, "the stream did not start")
        baseline = batch_items(server)
        url = f"{server.base_url}/transcribe"
        pending = [
            pool.submit(httpx.post, url, files={"file": ("a.wav", audio)}, timeout=GRACE_S + 30)
            for _ in range(REQUESTS)
        ]
        # Every request but the two handed to the model worker (one running, one waiting ahead of
        # it) is queued or done: all were accepted.
        wait_for(lambda: batch_items(server) - baseline >= REQUESTS - 2, 30, "the requests were not all accepted")
        assert server.metric("asr_queue_depth_items") >= 1, "the queue emptied before SIGTERM; use longer audio"
        signalled = terminate(server)
        messages, close_code = stream.finish()
        responses = [future.result(timeout=GRACE_S + 30) for future in pending]
        assert_clean_exit(server, signalled)
    for response in responses:
        assert_transcribed(response.status_code, response.content, REQUEST_AUDIO_S)
    finals = [m for m in messages if m["type"] == "final"]
    assert close_code == 1001, f"stream closed with {close_code}, expected 1001 (going away); got {messages}"
    assert finals and finals[-1]["end"] == pytest.approx(STREAM_AUDIO_S, abs=0.1), messages


# ---------------------------------------------------------------------------------------------
# Requests in progress at SIGTERM: the body is still being uploaded.


class SlowUpload:
    """A POST /transcribe whose body is sent in two halves, so it is in progress when SIGTERM comes."""

    def __init__(self, server: ServerProcess, audio: bytes, multipart: bool) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=GRACE_S + 30)
        if multipart:
            boundary = uuid.uuid4().hex
            self.content_type = f"multipart/form-data; boundary={boundary}"
            self.body = (
                (
                    f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
                    f"Content-Type: audio/wav\r\n\r\n"
                ).encode()
                + audio
                + f"\r\n--{boundary}--\r\n".encode()
            )
        else:
            self.content_type, self.body = "audio/wav", audio

    def start(self) -> None:
        self.conn.putrequest("POST", "/transcribe")
        self.conn.putheader("Content-Type", self.content_type)
        self.conn.putheader("Content-Length", str(len(self.body)))
        self.conn.endheaders()
        self.conn.send(self.body[: len(self.body) // 2])

    def finish(self) -> tuple[int, bytes]:
        self.conn.send(self.body[len(self.body) // 2 :])
        response = self.conn.getresponse()
        result = response.status, response.read()
        self.conn.close()
        return result


def test_sigterm_finishes_requests_still_uploading(bundle: Path, tmp_path: Path) -> None:
    seconds = 3.0
    with running_server(bundle, tmp_path, ASR_SHUTDOWN_GRACE_S=f"{GRACE_S:g}") as server:
        uploads = [SlowUpload(server, wav_bytes(tone(seconds)), multipart=bool(i % 2)) for i in range(3)]
        for upload in uploads:
            upload.start()
        wait_for(
            lambda: server.metric("asr_http_requests_in_progress") == len(uploads), 30, "the uploads did not start"
        )
        signalled = terminate(server)
        results = [upload.finish() for upload in uploads]
        assert_clean_exit(server, signalled)
    for status, body in results:
        assert_transcribed(status, body, seconds)
