"""The /stream router renders a session's typed events as docs/api.md's messages, fields in order."""

from __future__ import annotations

import json

from app.asr.ctc import Word
from app.engine.events import Final, Partial
from app.routers.stream import stream_message


def test_a_partial_renders_as_its_message() -> None:
    text = json.dumps(stream_message(Partial("the quick", 12.48, 13.9)))
    assert text == '{"type": "partial", "text": "the quick", "start": 12.48, "end": 13.9}'


def test_a_final_renders_with_its_words_in_order() -> None:
    words = (Word("the", 12.6, 12.72, 0.97), Word("quick", 12.76, 13.08, 0.94))
    message = stream_message(Final("the quick", 12.48, 15.12, words))
    assert list(message) == ["type", "text", "start", "end", "words"]
    assert message["words"] == [
        {"word": "the", "start": 12.6, "end": 12.72, "confidence": 0.97},
        {"word": "quick", "start": 12.76, "end": 13.08, "confidence": 0.94},
    ]
    assert stream_message(Final("", 1.0, 2.0))["words"] == []
