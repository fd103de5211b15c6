"""A trivial endpoint for measuring the load generator: it reads the upload and answers at once.

The same requests the real servers get (multipart WAV uploads) are read in full and answered
with a fixed transcription body, so what limits the request rate is the client and HTTP, never
a model.

    python -m bench.peers.trivial --port 8003
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

BODY = {"text": "", "duration": 0.0, "words": [], "model": "trivial", "processing_ms": 0.0}


async def transcribe(request: Request) -> Response:
    async for _ in request.stream():
        pass
    return JSONResponse(BODY)


async def readyz(request: Request) -> Response:
    return JSONResponse({"status": "ready"})


app = Starlette(routes=[Route("/transcribe", transcribe, methods=["POST"]), Route("/readyz", readyz)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args, _ = parser.parse_known_args()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
