"""A transcript as the files ``asr-client`` writes: plain text, SubRip, WebVTT or JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

FORMATS = ("txt", "srt", "vtt", "json")

CUE_PAUSE_S = 0.6  # a pause this long between words starts a new subtitle
CUE_MAX_S = 7.0  # longest subtitle on screen
CUE_MAX_CHARS = 84  # two lines of 42 characters


@dataclass
class Transcript:
    """A whole file's transcript, stitched from the pieces it was sent in (times on its timeline)."""

    model: str = ""
    duration: float = 0.0
    texts: list[str] = field(default_factory=list)
    words: list[dict[str, Any]] = field(default_factory=list)
    spans: list[tuple[float, float, str]] = field(default_factory=list)  # each piece: start, end, text

    @property
    def text(self) -> str:
        return " ".join(t for t in self.texts if t)

    def add(self, body: dict[str, Any], offset: float, seconds: float) -> None:
        """Append one piece's ``/transcribe`` answer, whose audio starts ``offset`` s into the file."""
        self.model = str(body.get("model", self.model))
        text = str(body.get("text", "")).strip()
        self.texts.append(text)
        self.spans.append((offset, offset + seconds, text))
        for word in body.get("words") or []:
            shifted = {**word, "start": round(word["start"] + offset, 3), "end": round(word["end"] + offset, 3)}
            self.words.append(shifted)
        self.duration = round(offset + seconds, 3)


def render(transcript: Transcript, fmt: str) -> str:
    """The file's content in ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "txt":
        return transcript.text + "\n"
    if fmt == "json":
        body = {"text": transcript.text, "duration": transcript.duration, "words": transcript.words}
        return json.dumps({**body, "model": transcript.model}, indent=2, ensure_ascii=False) + "\n"
    cues = _cues(transcript)
    if fmt == "srt":
        blocks = [f"{i}\n{_stamp(s, ',')} --> {_stamp(e, ',')}\n{t}\n" for i, (s, e, t) in enumerate(cues, 1)]
        return "\n".join(blocks)
    if fmt == "vtt":
        return "WEBVTT\n\n" + "\n".join(f"{_stamp(s, '.')} --> {_stamp(e, '.')}\n{t}\n" for s, e, t in cues)
    raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")


def _cues(transcript: Transcript) -> list[tuple[float, float, str]]:
    """Subtitles from the word times (a cue per pause, at most CUE_MAX_S and CUE_MAX_CHARS), or one
    per piece when the server sent no words."""
    if not transcript.words:
        return [span for span in transcript.spans if span[2]]
    cues: list[tuple[float, float, str]] = []
    current: list[dict[str, Any]] = []
    for word in transcript.words:
        if current:
            text = " ".join(w["word"] for w in [*current, word])
            pause = word["start"] - current[-1]["end"]
            if pause >= CUE_PAUSE_S or word["end"] - current[0]["start"] > CUE_MAX_S or len(text) > CUE_MAX_CHARS:
                cues.append(_cue(current))
                current = []
        current.append(word)
    if current:
        cues.append(_cue(current))
    return cues


def _cue(words: list[dict[str, Any]]) -> tuple[float, float, str]:
    return float(words[0]["start"]), float(words[-1]["end"]), " ".join(w["word"] for w in words)


def _stamp(seconds: float, decimal: str) -> str:
    millis = round(max(seconds, 0.0) * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}{decimal}{rest % 1000:03d}"
