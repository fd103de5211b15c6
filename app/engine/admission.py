"""Taking a request on: :class:`Admission`, and how much decoded upload audio the server holds at once.

An admission is a request the engine took on (it was ready then): the served model's config, the
check of its decoding options, and its transcription, with the upload's audio held against the
budget while it runs.

An upload's decoded audio (64 KB per second at 16 kHz) stays in memory until its transcript is
done, while only a few of its pieces wait in the batch queue at a time; so the queue's limit alone
does not bound how many long recordings are held. This budget does: an upload whose audio would
pass it is refused with ``QueueFull`` (429, retry later) before any of it is queued.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

import numpy as np

from app.asr.configs import BundleConfig
from app.asr.ctc import Hypothesis
from app.asr.options import DecodeOptions
from app.engine.batcher import QueueFull

if TYPE_CHECKING:
    from app.engine.engine import Transcript

RETRY_AFTER_S = 2.0


class AudioBudget:
    """Seconds of decoded upload audio held by transcriptions in progress, up to ``limit_s``."""

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self.held_s = 0.0

    def take(self, seconds: float) -> Held:
        """Hold ``seconds`` of audio until the returned hold is released; ``QueueFull`` if they do not fit."""
        if self.held_s + seconds > self.limit_s:
            raise QueueFull(RETRY_AFTER_S)
        self.held_s += seconds
        return Held(self, seconds)


class Held:
    """Audio held against a budget; released once (by ``release`` or leaving a ``with`` block)."""

    def __init__(self, budget: AudioBudget, seconds: float) -> None:
        self._budget = budget
        self._seconds = seconds

    def release(self) -> None:
        self._budget.held_s -= self._seconds
        self._seconds = 0.0

    def __enter__(self) -> Held:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()


class Transcriber(Protocol):
    """What an admission needs of the engine."""

    def check(self, options: DecodeOptions, stream: bool = False) -> None: ...

    async def transcribe(
        self, audio: np.ndarray, options: DecodeOptions | None = None, *, deadline: float | None = None
    ) -> Transcript: ...

    def transcribe_pieces(
        self, audio: np.ndarray, options: DecodeOptions | None = None, *, deadline: float | None = None
    ) -> AsyncGenerator[Hypothesis, None]: ...


class Admission:
    """A request the engine took on: the model's ``config``, and its transcription."""

    def __init__(self, engine: Transcriber, config: BundleConfig, uploads: AudioBudget) -> None:
        self.config = config
        self._engine = engine
        self._uploads = uploads

    def check(self, options: DecodeOptions) -> None:
        """Raise now (before the upload is decoded) if the served model cannot decode as ``options`` ask:
        ``NoLanguageModel`` for beam search without an LM, ``NoSecondPass`` for attention without one."""
        self._engine.check(options)

    def _hold(self, audio: np.ndarray) -> Held:
        return self._uploads.take(audio.shape[0] / self.config.sample_rate)

    async def transcribe(self, audio: np.ndarray, options: DecodeOptions, deadline: float | None) -> Transcript:
        """The transcript of an upload's audio (the engine's ``transcribe``), its audio held against
        ``max_transcribing_audio_seconds`` meanwhile; ``QueueFull`` (429) if it does not fit."""
        with self._hold(audio):
            return await self._engine.transcribe(audio, options, deadline=deadline)

    async def transcribe_pieces(
        self, audio: np.ndarray, options: DecodeOptions, deadline: float | None
    ) -> AsyncGenerator[Hypothesis, None]:
        """Each piece's hypothesis in order (the engine's ``transcribe_pieces``), the audio held as
        by :meth:`transcribe` from the first piece asked for until the pieces are closed."""
        with self._hold(audio):
            async with contextlib.aclosing(self._engine.transcribe_pieces(audio, options, deadline=deadline)) as pieces:
                async for hypothesis in pieces:
                    yield hypothesis
