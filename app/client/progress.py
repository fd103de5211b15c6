"""A progress bar on stderr, in seconds of audio transcribed (no dependency beyond the standard library)."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

WIDTH = 28
REDRAW_S = 0.1


class ProgressBar:
    """``[#####.....]  42%  12:30 / 29:51 audio  3/10 files  ETA 1:02``, redrawn in place.

    Thread-safe: workers call :meth:`advance` and :meth:`file_done`; :meth:`grow` corrects the
    total when a file's real length replaces its estimate. Silent when ``enabled`` is false.
    """

    def __init__(self, total_s: float, files: int, enabled: bool, stream: TextIO | None = None) -> None:
        self.total_s = max(total_s, 0.0)
        self.files = files
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.done_s = 0.0
        self.files_done = 0
        self._started = time.monotonic()
        self._drawn = 0.0
        self._lock = threading.Lock()

    def grow(self, delta_s: float) -> None:
        with self._lock:
            self.total_s = max(self.total_s + delta_s, self.done_s)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.done_s += seconds
            self._draw()

    def file_done(self) -> None:
        with self._lock:
            self.files_done += 1
            self._draw(force=True)

    def note(self, message: str) -> None:
        """A line of text above the bar (the bar is redrawn under it)."""
        with self._lock:
            if self.enabled:
                self.stream.write("\r\033[K")
            self.stream.write(message + "\n")
            self._draw(force=True)

    def close(self) -> None:
        with self._lock:
            self._draw(force=True)
            if self.enabled:
                self.stream.write("\n")
                self.stream.flush()

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._drawn < REDRAW_S):
            return
        self._drawn = now
        fraction = min(1.0, self.done_s / self.total_s) if self.total_s > 0 else 0.0
        filled = round(fraction * WIDTH)
        line = f"[{'#' * filled}{'.' * (WIDTH - filled)}] {fraction:4.0%}  {_clock(self.done_s)} / "
        line += f"{_clock(self.total_s)} audio"
        if self.files > 1:
            line += f"  {self.files_done}/{self.files} files"
        elapsed = now - self._started
        if 0 < fraction < 1:
            line += f"  ETA {_clock(elapsed * (1 - fraction) / fraction)}"
        self.stream.write("\r\033[K" + line)
        self.stream.flush()


def _clock(seconds: float) -> str:
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
