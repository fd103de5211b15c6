"""The real server as a subprocess: the README's curl examples work against it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import ROOT, free_port, running_server
from tests.support import encode, make_random_bundle, tone, wav_bytes

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("server")
    with running_server(make_random_bundle(folder / "tiny"), folder) as live:
        yield live.base_url
        live.proc.send_signal(signal.SIGTERM)
        assert live.proc.wait(timeout=30) == 0


def readme_curl_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Transcribe", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return [line for block in blocks for line in block.splitlines() if line.startswith("curl ")]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_curl_examples(server: str, tmp_path: Path) -> None:
    (tmp_path / "sample.wav").write_bytes(wav_bytes(tone(2.0)))
    (tmp_path / "sample.mp3").write_bytes(encode("mp3"))
    (tmp_path / "sample.pcm").write_bytes((tone(2.0) * 32767).astype("<i2").tobytes())
    commands = readme_curl_commands()
    assert len(commands) >= 5
    for command in commands:
        command = command.replace("localhost:8000", server.removeprefix("http://"))
        out = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, (command, out.stderr)
        body = json.loads(out.stdout)
        assert "error" not in body, (command, body)
        if "/transcribe" in command:
            assert set(body) == {"text", "duration", "words", "model", "processing_ms"}
            assert body["duration"] == pytest.approx(2.0, abs=0.06) and body["model"] == "tiny"


def test_metrics_and_request_id_over_the_wire(server: str) -> None:
    response = httpx.post(
        f"{server}/transcribe", files={"file": ("a.wav", wav_bytes(tone(1.0)))}, headers={"X-Request-ID": "e2e-1"}
    )
    assert response.status_code == 200 and response.headers["x-request-id"] == "e2e-1"
    metrics = httpx.get(f"{server}/metrics").text
    assert 'asr_http_requests_total{method="POST",route="/transcribe",status="200"}' in metrics
    bad = httpx.post(f"{server}/transcribe", content=b"nope", headers={"Content-Type": "text/plain"})
    assert bad.status_code == 415 and bad.json()["error"]["code"] == "unsupported_content_type"


def test_server_exits_1_when_the_model_cannot_load(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "ASR_MODEL_PATH": str(tmp_path / "absent"),
        "ASR_PORT": str(free_port()),
        "ASR_HOST": "127.0.0.1",
    }
    out = subprocess.run([sys.executable, "-m", "app"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "no such folder" in out.stderr
