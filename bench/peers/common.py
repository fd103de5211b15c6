"""What the peers share: their command line and the response body (the same shape as ours)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from app.asr.ctc import Hypothesis
from bench.recognizers import DEFAULT_MODEL


def arguments(description: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--runtime", default="auto")
    parser.add_argument("--precision", default="auto")
    return parser


def transcription(hyp: Hypothesis, duration: float, model: str, processing_ms: float) -> dict[str, Any]:
    """The body of ``POST /transcribe``'s answer, as ``app.schemas.TranscriptionResponse`` shapes it."""
    return {
        "text": hyp.text,
        "duration": round(duration, 3),
        "words": [{"word": w.word, "start": w.start, "end": w.end, "confidence": w.confidence} for w in hyp.words],
        "model": model,
        "processing_ms": round(processing_ms, 2),
    }
