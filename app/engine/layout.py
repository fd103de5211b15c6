"""How the model's work spreads over the machine: model workers, threads for each, batch size.

On a CPU, one single-threaded model worker per core serves more than one worker whose
operators span every core: a small network's operators are too short to split well, and a
thread preempted by request handling stalls the others at every operator. Small batches serve
more than large ones there (padding and cache misses cost more than a batch saves). On a GPU,
one worker feeds the device with large batches. Measured in docs/benchmarks.md.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

CPU_BATCH_SIZE = 4
GPU_BATCH_SIZE = 64


@dataclass(frozen=True)
class WorkerLayout:
    """``workers`` model batches of at most ``batch_size`` utterances at once, each on ``threads`` CPU threads."""

    workers: int
    threads: int
    batch_size: int


def cpu_cores(cgroup_cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """The cores this process may use: those it may run on, within a container's CPU limit."""
    try:
        cores = max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit(cgroup_cpu_max)
    return min(cores, limit) if limit else cores


def cgroup_cpu_limit(cpu_max: Path) -> int | None:
    """A cgroup v2 CPU quota in whole cores (rounded up), or None without one."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, math.ceil(int(quota) / int(period)))


def worker_layout(
    model_workers: int, num_threads: int, max_batch_size: int, device: str, cores: int | None = None
) -> WorkerLayout:
    """Resolve the settings' 0s ("auto") for ``device`` ("cpu" or "cuda")."""
    cores = cores or cpu_cores()
    if device == "cuda":
        return WorkerLayout(model_workers or 1, num_threads or cores, max_batch_size or GPU_BATCH_SIZE)
    workers = model_workers or cores
    return WorkerLayout(workers, num_threads or max(1, cores // workers), max_batch_size or CPU_BATCH_SIZE)
