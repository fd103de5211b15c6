"""Serving speed of small requests under uvicorn's httptools protocol, the limited one the server
uses (``app.http_limits``) and h11 with its own head limit: the cost of the HTTP limits.

Each protocol serves the full app (middleware, routers) in its own process; a load process keeps
``--connections`` keep-alive connections busy with ``GET /healthz`` for ``--seconds``, in rounds
that alternate the protocols, and the median requests per second are compared to httptools'.

    python -m bench.http_protocols --rounds 3 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import time
from typing import Any

import uvicorn

from app.config import Settings
from app.http_limits import http_limits, limited_protocol
from app.main import create_app

REQUEST = b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n"


def _no_model(settings: Settings, hardware: object) -> Any:
    raise RuntimeError("no model: this benchmark only needs /healthz")


def _serve(protocol: str, port: int) -> None:
    settings = Settings(log_level="warning", log_json=False)
    app = create_app(settings, recognizer_factory=_no_model)
    extra: dict[str, Any] = {"http": protocol}
    if protocol == "limited":
        extra["http"] = limited_protocol(http_limits(settings, 20_000, lambda reason: None))
    elif protocol == "h11":
        extra["h11_max_incomplete_event_size"] = settings.max_header_bytes
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", **extra)


async def _client(port: int, until: float) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    done = 0
    while time.monotonic() < until:
        writer.write(REQUEST)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
        await reader.readexactly(length)
        done += 1
    writer.close()
    return done


async def _load(port: int, connections: int, seconds: float) -> float:
    for _ in range(100):  # wait for the server to listen
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            break
        except OSError:
            await asyncio.sleep(0.1)
    until = time.monotonic() + seconds
    counts = await asyncio.gather(*(_client(port, until) for _ in range(connections)))
    return sum(counts) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--port", type=int, default=18731)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {"httptools": [], "limited": [], "h11": []}
    for _ in range(args.rounds):
        for protocol, results in rates.items():
            server = multiprocessing.get_context("spawn").Process(target=_serve, args=(protocol, args.port))
            server.start()
            try:
                results.append(asyncio.run(_load(args.port, args.connections, args.seconds)))
            finally:
                server.terminate()
                server.join()
    base = statistics.median(rates["httptools"])
    for protocol, results in rates.items():
        median = statistics.median(results)
        runs = ", ".join(f"{rate:.0f}" for rate in results)
        print(f"{protocol:10s} {median:8.0f} req/s (runs: {runs})  ratio to httptools {median / base:.3f}")


if __name__ == "__main__":
    main()
