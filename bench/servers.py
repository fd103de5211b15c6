"""Servers under test as subprocesses on free loopback ports, started and stopped by the harness.

Each server runs in its own process group (LitServe forks workers), logs to a file under
``bench/results/logs/``, and is ready when its readiness URL answers 200. Stopping sends
SIGTERM to the group, then SIGKILL after a grace period: nothing outlives the harness.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / "bench" / "results" / "logs"
HOST = "127.0.0.1"


@dataclass
class ServerSpec:
    """How to start one server: a name, its command (``{port}`` is filled in), env and readiness path."""

    name: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    ready_path: str = "/readyz"
    start_timeout_s: float = 180.0


@dataclass
class RunningServer:
    """A started server: its base URL, the process the harness launched, and how long it took to be ready."""

    spec: ServerSpec
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    start_seconds: float


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def ours(name: str, model: Path, runtime: str, precision: str, **settings: str) -> ServerSpec:
    """``python -m app`` with ``ASR_*`` settings (greedy decoding, like the peers)."""
    env = {
        "ASR_MODEL_PATH": str(model),
        "ASR_DEVICE": "cpu",
        "ASR_RUNTIME": runtime,
        "ASR_PRECISION": precision,
        "ASR_DECODER": "greedy",
        "ASR_LOG_LEVEL": "warning",
        "ASR_HOST": HOST,
        "ASR_PORT": "{port}",
        **{f"ASR_{key.upper()}": value for key, value in settings.items()},
    }
    return ServerSpec(name, [sys.executable, "-m", "app"], env)


def peer(name: str, module: str, model: Path, runtime: str, precision: str, ready_path: str) -> ServerSpec:
    """One of ``bench/peers``' servers."""
    command = [sys.executable, "-m", module, "--host", HOST, "--port", "{port}", "--model", str(model)]
    return ServerSpec(name, [*command, "--runtime", runtime, "--precision", precision], ready_path=ready_path)


@contextmanager
def running(spec: ServerSpec) -> Iterator[RunningServer]:
    """Start ``spec``, wait until ready, yield it, and stop it (and its children) afterwards."""
    with running_all([spec]) as started:
        yield started[0]


@contextmanager
def running_all(specs: list[ServerSpec]) -> Iterator[list[RunningServer]]:
    """Launch every spec at once, wait until all are ready, yield them, stop them all afterwards."""
    launched: list[RunningServer] = []
    try:
        for spec in specs:
            launched.append(launch(spec))
        for server in launched:
            _wait_ready(server)
        yield launched
    finally:
        for server in launched:
            stop(server.process)


def launch(spec: ServerSpec) -> RunningServer:
    """Start ``spec`` on a free port (not yet ready: see :func:`running_all`)."""
    port = str(free_port())
    command = [part.replace("{port}", port) for part in spec.command]
    env = {**os.environ, **{k: v.replace("{port}", port) for k, v in spec.env.items()}}
    LOGS.mkdir(parents=True, exist_ok=True)
    log_path = LOGS / f"{spec.name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    return RunningServer(spec, f"http://{HOST}:{port}", process, log_path, time.perf_counter())


def tree(pid: int) -> list[psutil.Process]:
    """The process and all its descendants (LitServe's workers, for instance)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by the process tree rooted at ``pid``."""
    total = 0.0
    for proc in tree(pid):
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


def idle_cpu(pid: int, interval_s: float = 2.0) -> float:
    """Cores the process tree uses over ``interval_s`` (call it while the server has no work)."""
    before = cpu_seconds(pid)
    time.sleep(interval_s)
    return (cpu_seconds(pid) - before) / interval_s


def wait_idle(pid: int, below: float = 0.1, interval_s: float = 1.0, timeout_s: float = 60.0) -> float:
    """Wait until the tree uses less than ``below`` of a core over ``interval_s``; returns its last rate."""
    deadline = time.monotonic() + timeout_s
    rate = float("inf")
    while time.monotonic() < deadline:
        rate = idle_cpu(pid, interval_s)
        if rate < below:
            break
    return rate


def _wait_ready(server: RunningServer) -> None:
    """Poll the readiness URL; ``start_seconds`` holds the launch time until then, the duration after."""
    launched = server.start_seconds
    deadline = launched + server.spec.start_timeout_s
    while time.perf_counter() < deadline:
        if server.process.poll() is not None:
            tail = server.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{server.spec.name} exited with {server.process.returncode} while starting:\n{tail}")
        try:
            if httpx.get(server.url + server.spec.ready_path, timeout=2).status_code == 200:
                server.start_seconds = time.perf_counter() - launched
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{server.spec.name} was not ready within {server.spec.start_timeout_s:.0f} s; see {server.log}")


def stop(process: subprocess.Popen[bytes], grace_s: float = 20.0) -> None:
    """SIGTERM the process group the harness started (waking it if paused), SIGKILL it if it lingers."""
    if process.poll() is None:
        _signal_group(process, signal.SIGTERM)
        _signal_group(process, signal.SIGCONT)
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace_s)
    _signal_group(process, signal.SIGKILL)  # stragglers of the group (forked workers)
    process.wait(timeout=10)


def pause(server: RunningServer) -> None:
    """Freeze the server's process group (SIGSTOP), so an idle server takes no CPU from the others."""
    _signal_group(server.process, signal.SIGSTOP)


def resume(server: RunningServer) -> None:
    """Thaw a paused server (SIGCONT)."""
    _signal_group(server.process, signal.SIGCONT)


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):
        os.killpg(process.pid, sig)  # the group whose leader the harness started
