"""Process tuning for inference and training on a CPU: threads and glibc's allocator thresholds.

Every utterance allocates and frees a few blocks of a few megabytes (its spectrogram, its
features). glibc serves blocks that large with a fresh ``mmap`` or trims them back to the kernel
when they are freed, so the next utterance pays a page fault, and the kernel zeroes a page, for
every 4 KiB it touches. On this project's 2-core test machine that made the log-mel frontend
about three times slower than its arithmetic (docs/benchmarks.md). Raising the two thresholds
keeps such blocks in the heap, where the next utterance reuses them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib.util
import logging

logger = logging.getLogger(__name__)

# mallopt(3) parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD_BYTES = 32 << 20
"""Blocks under this size come from the heap (glibc's own ceiling for its adaptive threshold);
larger ones, such as the samples of a long recording, are still mapped and unmapped."""

TRIM_THRESHOLD_BYTES = 64 << 20
"""Free memory at the top of a heap is returned to the kernel once it exceeds this."""


def tune_malloc() -> bool:
    """Set glibc's mmap and trim thresholds for this process; False where the C library is not
    glibc (``mallopt`` missing or refusing), which leaves the allocator as it was."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    tuned = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
    if tuned:
        logger.info("malloc: blocks under %d MiB are reused from the heap", MMAP_THRESHOLD_BYTES >> 20)
    return tuned


def tune_process(num_threads: int, malloc: bool = True) -> None:
    """Set this process's PyTorch CPU threads (the frontend's, and eager networks'), where PyTorch
    is installed, and, with ``malloc``, the allocator thresholds (:func:`tune_malloc`)."""
    if torch_installed():
        import torch  # not at import time: nothing heavy happens then

        torch.set_num_threads(num_threads)
    if malloc:
        tune_malloc()


@functools.cache
def torch_installed() -> bool:
    """Whether PyTorch can be imported (the slim install serves without it)."""
    try:
        return importlib.util.find_spec("torch") is not None
    except ValueError:  # a module entry of None (as tests block it)
        return False
