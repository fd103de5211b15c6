"""Model workers, threads per worker and batch size, from the settings' "auto" zeros."""

from __future__ import annotations

from pathlib import Path

from app.engine.layout import WorkerLayout, cgroup_cpu_limit, cpu_cores, worker_layout


def test_auto_on_cpu_is_one_single_threaded_worker_per_core() -> None:
    assert worker_layout(0, 0, 0, "cpu", cores=4) == WorkerLayout(4, 1, 4)


def test_explicit_workers_share_the_cores() -> None:
    assert worker_layout(2, 0, 16, "cpu", cores=8) == WorkerLayout(2, 4, 16)
    assert worker_layout(3, 0, 0, "cpu", cores=2) == WorkerLayout(3, 1, 4)
    assert worker_layout(1, 2, 1, "cpu", cores=8) == WorkerLayout(1, 2, 1)


def test_auto_on_cuda_is_one_worker() -> None:
    assert worker_layout(0, 0, 0, "cuda", cores=16) == WorkerLayout(1, 16, 64)


def test_cpu_cores_counts_this_process_cores() -> None:
    assert cpu_cores() >= 1


def test_a_containers_cpu_limit_bounds_the_cores(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")  # 1.5 cores
    assert cgroup_cpu_limit(cpu_max) == 2
    assert cpu_cores(cpu_max) <= 2
    cpu_max.write_text("max 100000\n")
    assert cgroup_cpu_limit(cpu_max) is None
    assert cgroup_cpu_limit(tmp_path / "missing") is None
