"""A naive server: FastAPI that transcribes one request at a time, without a batcher.

Each request's audio is decoded on the threadpool, then the recognizer runs it alone under a
lock (still on the threadpool, so the event loop stays free). This is what serving looks like
before anyone writes a batcher.

    python -m bench.peers.naive --port 8001
"""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from app.asr.audio import AudioError, decode_audio
from bench.peers.common import arguments, transcription
from bench.recognizers import greedy_decoder, make_recognizer, warm_up


def create_app(model: Any, runtime: str, precision: str) -> FastAPI:
    recognizer = make_recognizer(model, runtime, precision)
    warm_up(recognizer)
    decoder = greedy_decoder(recognizer)
    rate = recognizer.config.sample_rate
    lock = threading.Lock()
    app = FastAPI(title="naive ASR")

    def transcribe_one(data: bytes, started: float) -> dict[str, Any]:
        try:
            audio = decode_audio(data, rate)
        except AudioError as exc:
            raise HTTPException(400, exc.code) from exc
        with lock:
            log_probs = recognizer.infer([audio])[0]
            hyp = decoder.decode(log_probs)
        return transcription(hyp, audio.shape[0] / rate, recognizer.config.name, (time.perf_counter() - started) * 1e3)

    @app.post("/transcribe")
    async def transcribe(request: Request) -> dict[str, Any]:
        started = time.perf_counter()
        form = await request.form()
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise HTTPException(400, "missing_file")
        data = await upload.read()
        await form.close()
        return await run_in_threadpool(transcribe_one, data, started)

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        return {"status": "ready"}

    return app


def main() -> None:
    args = arguments(__doc__).parse_args()
    app = create_app(args.model, args.runtime, args.precision)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
