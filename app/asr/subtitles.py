"""Segments of a transcript, cut at pauses between words, and their SubRip (SRT) and WebVTT forms."""

from __future__ import annotations

from dataclasses import dataclass, field

from app.asr.ctc import Word


@dataclass
class Segment:
    """A stretch of speech between pauses: its time span, text and words."""

    start: float
    end: float
    text: str
    words: list[Word] = field(default_factory=list)


def segment_words(words: list[Word], pause_s: float = 0.6, max_seconds: float = 12.0) -> list[Segment]:
    """Group words into segments, cutting at every pause of at least ``pause_s`` seconds.

    A segment that would grow past ``max_seconds`` is cut before the word that would pass it,
    so subtitles stay readable.
    """
    segments: list[Segment] = []
    current: list[Word] = []
    for word in words:
        if current and (word.start - current[-1].end >= pause_s or word.end - current[0].start > max_seconds):
            segments.append(_segment(current))
            current = []
        current.append(word)
    if current:
        segments.append(_segment(current))
    return segments


def _segment(words: list[Word]) -> Segment:
    return Segment(start=words[0].start, end=words[-1].end, text=" ".join(w.word for w in words), words=words)


def _timestamp(seconds: float, decimal: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def to_srt(segments: list[Segment]) -> str:
    """SubRip text: numbered cues ``HH:MM:SS,mmm --> HH:MM:SS,mmm``."""
    cues = [
        f"{i}\n{_timestamp(s.start, ',')} --> {_timestamp(s.end, ',')}\n{s.text}\n"
        for i, s in enumerate(segments, start=1)
    ]
    return "\n".join(cues)


def to_vtt(segments: list[Segment]) -> str:
    """WebVTT text: a ``WEBVTT`` header, then cues ``HH:MM:SS.mmm --> HH:MM:SS.mmm``."""
    cues = [f"{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}\n{s.text}\n" for s in segments]
    return "\n".join(["WEBVTT\n", *cues])
