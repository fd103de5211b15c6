"""scripts/demo.sh, the curl demos, against the real server."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.server import free_port, random_bundle, running_server
from tests.support import tone, wav_bytes

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "scripts" / "demo.sh"
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed"),
]


def run_demo(base_url: str, audio: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BASE_URL": base_url}
    return subprocess.run(["bash", str(DEMO), str(audio)], env=env, capture_output=True, text=True, timeout=120)


def test_demo_script_runs_against_the_server(tmp_path: Path) -> None:
    audio = tmp_path / "sample.wav"
    audio.write_bytes(wav_bytes(tone(2.0)))
    bundle = random_bundle(tmp_path / "model")
    with running_server(bundle, tmp_path) as server:
        out = run_demo(server.base_url, audio)
    assert out.returncode == 0, f"stdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    # multipart, WAV body, PCM with ;rate=, PCM with ?sample_rate=, OpenAI-compatible
    assert out.stdout.count('"text"') == 5
    assert "asr_model_ready 1.0" in out.stdout
    assert f"all demo requests succeeded against {server.base_url}" in out.stdout


def test_demo_script_fails_when_a_request_fails(tmp_path: Path) -> None:
    audio = tmp_path / "sample.wav"
    audio.write_bytes(wav_bytes(tone(1.0)))
    out = run_demo(f"http://127.0.0.1:{free_port()}", audio)  # nothing listens there
    assert out.returncode != 0
    assert "all demo requests succeeded" not in out.stdout
