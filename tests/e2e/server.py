"""Running the real server (`python -m app`) as a subprocess on a free loopback port, for e2e tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import torch

from app.asr.bundle import build_model, save_bundle
from app.asr.configs import default_config
from tests.support import wait_for

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ServerProcess:
    """A server started as `python -m app` on a free local port."""

    proc: subprocess.Popen[str]
    base_url: str
    port: int
    log: Path

    def metric(self, name: str) -> float:
        """The value of an unlabelled sample in /metrics."""
        for line in httpx.get(f"{self.base_url}/metrics", timeout=5).text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise KeyError(name)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def random_bundle(path: Path) -> Path:
    """The default architecture, randomly initialised: real model code at real model speed."""
    torch.manual_seed(0)
    config = default_config("random-en-small")
    _, model = build_model(config)
    return save_bundle(path, config, model, "# random-en-small\n\nRandomly initialised test bundle.\n")


@contextmanager
def running_server(bundle: Path, log_dir: Path, **settings: str) -> Iterator[ServerProcess]:
    """Start the server with ``ASR_*`` settings, wait for /readyz 200; kill it if still alive at exit."""
    port = free_port()
    env = {
        **os.environ,
        "ASR_MODEL_PATH": str(bundle),
        "ASR_HOST": "127.0.0.1",
        "ASR_PORT": str(port),
        "ASR_LOG_JSON": "false",
        **settings,
    }
    log = log_dir / f"server-{port}.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app"], env=env, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, text=True
        )
    server = ServerProcess(proc, f"http://127.0.0.1:{port}", port, log)
    try:
        wait_for(lambda: _ready(server), 90, "the server did not become ready")
        yield server
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _ready(server: ServerProcess) -> bool:
    assert server.proc.poll() is None, f"the server exited early:\n{server.output()}"
    try:
        return httpx.get(f"{server.base_url}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False
