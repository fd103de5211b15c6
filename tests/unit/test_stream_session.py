"""A stream session over a stub engine: a full batch queue postpones steps and fails finals."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from app.asr.ctc import GreedyDecoder
from app.config import Settings
from app.engine.batcher import QueueFull
from app.engine.streaming import StreamOptions, StreamSession, StreamTuning
from app.metrics import Metrics
from tests.streaming_support import ToneFactory, pcm16, spell


class StubEngine:
    """The parts of the engine a session uses, over the tone model; ``full`` makes the queue full."""

    def __init__(self) -> None:
        self.recognizer = ToneFactory()(Settings())
        self.config = self.recognizer.config
        self.greedy_decoder = GreedyDecoder(self.config.tokens, self.config.blank_id, self.config.frame_seconds)
        self.full = False
        self.calls = 0
        self.refused = asyncio.Event()

    def decoder(self) -> GreedyDecoder:  # the server's default decoder, used for finals
        return self.greedy_decoder

    def model_config(self) -> Any:
        return self.config

    async def run_decoder(self, fn: Any, *args: Any) -> Any:
        return fn(*args)

    async def infer(self, audio: np.ndarray, priority: int = 0, *, accepted: bool = False) -> np.ndarray:
        self.calls += 1
        if self.calls > 50:
            raise RuntimeError("the session retries in a loop")
        if self.full:
            self.refused.set()
            raise QueueFull(1.0)
        return self.recognizer.infer([audio])[0]


def session(engine: StubEngine, sent: list[dict[str, Any]]) -> StreamSession:
    async def emit(message: dict[str, Any]) -> None:
        sent.append(message)

    tuning = StreamTuning(partial_interval_s=0.3)
    return StreamSession(engine, StreamOptions(), emit, Metrics(), tuning)  # type: ignore[arg-type]


def test_a_full_queue_postpones_steps_until_more_audio() -> None:
    async def scenario() -> tuple[list[dict[str, Any]], int]:
        engine, sent = StubEngine(), []
        stream = session(engine, sent)
        task = asyncio.create_task(stream.run())
        data = pcm16(spell("hello"))
        engine.full = True
        stream.push(data[:32000])
        await engine.refused.wait()
        refused_calls = engine.calls
        engine.full = False
        stream.push(data[32000:])
        stream.finish("eof")
        await task
        return sent, refused_calls

    sent, refused_calls = asyncio.run(scenario())
    assert refused_calls == 1
    assert sent[-1]["type"] == "final" and sent[-1]["text"] == "hello"


def test_a_full_queue_at_the_final_fails_the_session() -> None:
    async def scenario() -> None:
        engine = StubEngine()
        stream = session(engine, [])
        stream.push(pcm16(spell("hi", tail_s=0.0)))
        engine.full = True
        stream.finish("eof")
        await stream.run()

    with pytest.raises(QueueFull):
        asyncio.run(scenario())
