"""How many CPUs this process may really use: its affinity, capped by a cgroup CPU quota.

`os.cpu_count()` (and torch's default thread count) report the machine's cores. In a
Kubernetes pod with a CPU limit the kernel throttles the container to its quota, so threads
beyond it only wait: a training pod limited to 2 CPUs on a 64-core node must not start 64.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_V2_MAX = Path("/sys/fs/cgroup/cpu.max")  # "max 100000" or "<quota> <period>"
CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")  # -1 = no quota
CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
_share: int | None = None  # this process's part of the CPUs when it runs beside others (set_share)


def set_share(n: int | None) -> None:
    """Cap what `usable_cpus` reports in this process: a search worker's share of the CPUs; None lifts it."""
    global _share
    _share = None if n is None else max(1, int(n))


def cgroup_quota(v2: Path = CGROUP_V2_MAX, v1_quota: Path = CGROUP_V1_QUOTA,
                 v1_period: Path = CGROUP_V1_PERIOD) -> float | None:
    """CPUs allowed by the cgroup's quota (e.g. 1.5), or None when there is none or it cannot be read."""
    try:
        if v2.is_file():
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        if v1_quota.is_file() and v1_period.is_file():
            quota_us = int(v1_quota.read_text())
            return None if quota_us <= 0 else quota_us / int(v1_period.read_text())
    except (OSError, ValueError):
        return None
    return None


def usable_cpus() -> int:
    """The CPUs this process may use: its affinity mask, capped by the cgroup quota (rounded up) and by
    its share (`set_share`), at least 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    quota = cgroup_quota()
    if quota is not None:
        n = min(n, math.ceil(quota))
    if _share is not None:
        n = min(n, _share)
    return max(1, n)
