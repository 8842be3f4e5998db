"""The CPUs a process may use (affinity and cgroup quota) and the training's automatic thread count."""

from __future__ import annotations

from pathlib import Path

import pytest

from fusionrec import cpus
from fusionrec.config import TrainConfig


@pytest.mark.parametrize(("v2", "v1", "expected"), [
    ("max 100000\n", None, None),
    ("150000 100000\n", None, 1.5),
    ("200000 100000", ("999", "1"), 2.0),  # v2 wins when both exist
    (None, ("-1", "100000"), None),
    (None, ("300000", "100000"), 3.0),
    ("garbage", None, None),
    (None, None, None),
])
def test_cgroup_quota_reads_v2_then_v1(tmp_path: Path, v2: str | None, v1: tuple[str, str] | None,
                                       expected: float | None) -> None:
    paths = tmp_path / "cpu.max", tmp_path / "cfs_quota_us", tmp_path / "cfs_period_us"
    if v2 is not None:
        paths[0].write_text(v2)
    if v1 is not None:
        paths[1].write_text(v1[0])
        paths[2].write_text(v1[1])
    assert cpus.cgroup_quota(*paths) == expected


def test_usable_cpus_is_the_affinity_capped_by_the_quota(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpus.os, "sched_getaffinity", lambda _pid: set(range(64)))
    monkeypatch.setattr(cpus, "cgroup_quota", lambda: 1.5)
    assert cpus.usable_cpus() == 2  # a pod limited to 1.5 CPUs on a 64-core node
    monkeypatch.setattr(cpus, "cgroup_quota", lambda: None)
    assert cpus.usable_cpus() == 64
    monkeypatch.setattr(cpus.os, "sched_getaffinity", lambda _pid: {3})
    assert cpus.usable_cpus() == 1


def test_training_threads_automatic_by_size_and_within_a_search_workers_share(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from fusionrec.training import AUTO_THREADS_MIN_ROWS, training_threads

    monkeypatch.setattr(cpus.os, "sched_getaffinity", lambda _pid: set(range(4)))
    monkeypatch.setattr(cpus, "cgroup_quota", lambda: None)
    try:
        assert training_threads(TrainConfig(threads=3), 10) == 3  # set: used as it is
        assert training_threads(TrainConfig(threads=0), AUTO_THREADS_MIN_ROWS - 1) == 1  # small: one thread
        assert training_threads(TrainConfig(threads=0), AUTO_THREADS_MIN_ROWS) == 4  # large: every usable CPU
        cpus.set_share(2)  # a search worker beside another
        assert training_threads(TrainConfig(threads=0), AUTO_THREADS_MIN_ROWS) == 2
        assert training_threads(TrainConfig(threads=3), AUTO_THREADS_MIN_ROWS) == 3  # an explicit setting wins
    finally:
        cpus.set_share(None)
    assert cpus.usable_cpus() == 4
    assert TrainConfig().threads == 0
