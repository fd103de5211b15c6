"""Transcribe many files, or long ones, with progress: each file is decoded here, cut at its
quietest moments into pieces of about ``piece_s`` seconds that go to ``POST /transcribe`` a few
at a time, and stitched back onto the file's timeline, then written next to the input.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from app.client import STREAM_RATE, AsrClient, read_pcm
from app.client.outputs import Transcript, render
from app.client.progress import ProgressBar

SEARCH_S = 10.0  # a cut goes in the quietest moment of the last SEARCH_S seconds of a piece
FRAME = STREAM_RATE // 50
PAUSE_FRAMES = 15  # the quietest 300 ms is looked for, and the cut goes in its middle


@dataclass(frozen=True)
class Job:
    """One input file and the files its transcript goes to (empty: print it)."""

    path: Path
    targets: tuple[Path, ...]


def plan(paths: Sequence[str], formats: Sequence[str], force: bool, note: Callable[[str], None]) -> list[Job]:
    """A job per input; inputs whose outputs exist already are skipped (with a note) unless ``force``."""
    jobs = []
    for name in paths:
        path = Path(name)
        targets = tuple(path.with_suffix(f".{fmt}") for fmt in formats)
        existing = [str(t) for t in targets if t.exists()]
        if existing and not force:
            note(f"asr-client: {path}: skipped, {', '.join(existing)} exists (--force overwrites)")
            continue
        jobs.append(Job(path, targets))
    return jobs


def cut_points(pcm: np.ndarray, piece_s: float) -> list[int]:
    """Sample offsets where pieces of ``pcm`` (16 kHz) start: every ``piece_s`` seconds or a little
    before, in the middle of the quietest 300 ms, so that a cut falls in a pause rather than in a word."""
    size, search = int(piece_s * STREAM_RATE), int(min(SEARCH_S, piece_s / 2) * STREAM_RATE)
    starts = [0]
    while len(pcm) - starts[-1] > size * 1.25:
        end = starts[-1] + size
        window = pcm[end - search : end].astype(np.float32)
        energy = (window[: len(window) // FRAME * FRAME].reshape(-1, FRAME) ** 2).mean(axis=1)
        smoothed = np.convolve(energy, np.ones(PAUSE_FRAMES), mode="valid")  # a pause, not a gap in a word
        quietest = int(np.argmin(smoothed)) + PAUSE_FRAMES // 2
        starts.append(end - search + quietest * FRAME + FRAME // 2)
    return starts


def probe_seconds(path: Path) -> float:
    """The length a file states (0 if it states none or cannot be opened): the bar's first estimate."""
    try:
        with av.open(str(path)) as container:
            return max(0.0, (container.duration or 0) / av.time_base)
    except (av.error.FFmpegError, OSError, ValueError):
        return 0.0


class BatchTranscriber:
    """Runs :class:`Job` s: ``jobs`` pieces in flight at once, across files, with a progress bar."""

    def __init__(self, client: AsrClient, bar: ProgressBar, jobs: int = 2, piece_s: float = 60.0) -> None:
        self.client = client
        self.bar = bar
        self.piece_s = piece_s
        self.requests = ThreadPoolExecutor(jobs, thread_name_prefix="asr-piece")
        self.files = ThreadPoolExecutor(jobs, thread_name_prefix="asr-file")  # bounds the files held decoded

    def transcribe(self, job: Job, estimate_s: float) -> Transcript:
        """The whole file's transcript; raises on a decoding or server error."""
        pcm = np.frombuffer(read_pcm(job.path), dtype="<i2")
        self.bar.grow(len(pcm) / STREAM_RATE - estimate_s)
        starts = cut_points(pcm, self.piece_s)
        bounds = list(zip(starts, [*starts[1:], len(pcm)], strict=True))
        pieces: list[Future[dict]] = [self.requests.submit(self._piece, pcm[a:b]) for a, b in bounds]
        transcript = Transcript()
        for (start, end), piece in zip(bounds, pieces, strict=True):
            transcript.add(piece.result(), start / STREAM_RATE, (end - start) / STREAM_RATE)
        return transcript

    def submit(self, job: Job, estimate_s: float) -> Future[Transcript]:
        return self.files.submit(self.transcribe, job, estimate_s)

    def close(self) -> None:
        self.files.shutdown(cancel_futures=True)
        self.requests.shutdown(cancel_futures=True)

    def _piece(self, pcm: np.ndarray) -> dict:
        body = self.client.transcribe_pcm(pcm.tobytes(), STREAM_RATE)
        self.bar.advance(len(pcm) / STREAM_RATE)
        return body


def write_outputs(transcript: Transcript, targets: Sequence[Path]) -> None:
    """Write each target whole (a temporary file renamed into place: never half a file)."""
    for target in targets:
        content = render(transcript, target.suffix[1:])
        fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(content)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
