"""glibc allocator thresholds (``ASR_TUNE_MALLOC``)."""

from __future__ import annotations

import platform

from app.process import tune_malloc


def test_tune_malloc_takes_effect_on_glibc() -> None:
    assert tune_malloc() is (platform.libc_ver()[0] == "glibc")
