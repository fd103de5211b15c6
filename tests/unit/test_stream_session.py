"""A stream session over a stub engine: a full batch queue postpones steps and fails finals;
partials run on capped windows while finals equal offline transcription."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from app.asr.bundle import Bundle, build_model
from app.asr.configs import default_config
from app.asr.ctc import GreedyDecoder, Hypothesis
from app.asr.options import DecodeOptions
from app.asr.torch_recognizer import TorchRecognizer
from app.config import Settings
from app.engine.batcher import QueueFull
from app.engine.decoders import NoSecondPass
from app.engine.events import Closed, Final, StreamEvent
from app.engine.streaming import StreamOptions, StreamSession, StreamTuning
from app.metrics import Metrics
from tests.streaming_support import ToneFactory, pcm16, spell


class StubEngine:
    """The engine as a session sees it (its :class:`StreamPort`), over the tone model; ``full``
    makes the queue full."""

    def __init__(self, recognizer: TorchRecognizer | None = None) -> None:
        self.recognizer = recognizer or ToneFactory()(Settings())
        self.config = self.recognizer.config
        self.greedy_decoder = GreedyDecoder(self.config.tokens, self.config.blank_id, self.config.frame_seconds)
        self.full = False
        self.calls = 0
        self.windows: list[int] = []
        self.refused = asyncio.Event()
        self.finals_options: list[DecodeOptions] = []

    def model_config(self, accepted: bool = False) -> Any:
        return self.config

    async def decode(self, log_probs: np.ndarray, time_offset: float, options: DecodeOptions) -> Hypothesis:
        return self.greedy_decoder.decode(log_probs, time_offset)

    async def finalize(self, audio: np.ndarray, time_offset: float, options: DecodeOptions) -> Hypothesis:
        """The server's default decoder for finals: greedy here."""
        self.finals_options.append(options)
        return self.greedy_decoder.decode(await self.infer(audio, accepted=True), time_offset)

    def check(self, options: DecodeOptions, stream: bool = False) -> None:
        if options.requested == "attention":
            raise NoSecondPass("no second pass here")

    async def infer(self, audio: np.ndarray, priority: int = 0, *, accepted: bool = False) -> np.ndarray:
        self.calls += 1
        self.windows.append(int(audio.shape[0]))
        if self.calls > 50:
            raise RuntimeError("the session retries in a loop")
        if self.full:
            self.refused.set()
            raise QueueFull(1.0)
        return self.recognizer.infer([audio])[0]


def session(engine: StubEngine, sent: list[StreamEvent], **tuning: Any) -> StreamSession:
    async def emit(event: StreamEvent) -> None:
        sent.append(event)

    tuned = StreamTuning(**{"partial_interval_s": 0.3, "vad": "energy", **tuning})  # tones are not speech
    return StreamSession(engine, StreamOptions(), DecodeOptions(), emit, Metrics(), tuned)


def test_a_full_queue_postpones_steps_until_more_audio() -> None:
    async def scenario() -> tuple[list[StreamEvent], int]:
        engine, sent = StubEngine(), list[StreamEvent]()
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
    assert sent[-1] == Closed("eof")
    assert isinstance(sent[-2], Final) and sent[-2].text == "hello"


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


def test_capped_partial_windows_and_a_final_equal_to_offline() -> None:
    """The default architecture (random weights, a 2.5 s receptive field): partial windows
    hold 1 s of context each side, and the final still equals offline decoding of the audio."""
    torch.manual_seed(0)
    config = default_config("random-en-small")
    frontend, model = build_model(config)
    recognizer = TorchRecognizer(Bundle(Path("random"), config, frontend, model.eval()), device="cpu")
    audio = (0.1 * np.random.default_rng(3).standard_normal(16000 * 9)).astype(np.float32)
    engine, sent = StubEngine(recognizer), list[StreamEvent]()

    async def scenario() -> None:
        stream = session(engine, sent, partial_interval_s=0.5, max_context_s=1.0)
        task = asyncio.create_task(stream.run())
        for start in range(0, audio.shape[0], 1600):
            stream.push(pcm16(audio[start : start + 1600]))
            await asyncio.sleep(0)
        stream.finish("eof")
        await task

    asyncio.run(scenario())
    offline = engine.greedy_decoder.decode(recognizer.infer([pcm16_round_trip(audio)])[0])
    finals = [e for e in sent if isinstance(e, Final)]
    assert [f.text for f in finals] == [offline.text] and offline.text
    partial_windows, final_window = engine.windows[:-1], engine.windows[-1]
    radius_s = config.model.receptive_field * config.frontend.hop_length / 16000
    assert final_window == audio.shape[0]
    assert max(partial_windows) < 16000 * (1.0 + 1.0 + 0.5 + 0.2) < 16000 * 2 * radius_s


def pcm16_round_trip(audio: np.ndarray) -> np.ndarray:
    return np.frombuffer(pcm16(audio), dtype="<i2").astype(np.float32) / 32768.0


def test_a_config_s_decoding_options_reach_the_finals_and_are_checked() -> None:
    engine, sent = StubEngine(), list[StreamEvent]()
    stream = session(engine, sent)
    chosen = DecodeOptions.parse(decoder="beam", hotwords=["kubelet:5"])
    stream.configure(StreamOptions(), chosen)
    with pytest.raises(NoSecondPass):
        stream.configure(StreamOptions(), DecodeOptions(decoder="attention"))

    async def scenario() -> None:
        task = asyncio.create_task(stream.run())
        stream.push(pcm16(spell("ab")))
        stream.finish("eof")
        await task

    asyncio.run(scenario())
    assert engine.finals_options == [chosen]
    assert [type(e) for e in sent][-2:] == [Final, Closed]
