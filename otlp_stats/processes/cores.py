"""How many cores this process may use: its CPU affinity, capped by its cgroup's CPU quota."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def available_cores(cgroup_root: Path = CGROUP_ROOT) -> int:
    """The cores --processes auto uses: a container limited to 2 CPUs on a 16-core node gets 2,
    not 16 (os.cpu_count() would say 16)."""
    cores = len(os.sched_getaffinity(0))
    quota = cgroup_quota(cgroup_root)
    if quota is not None:
        # A quota of 1.5 CPUs still lets a second process do useful work half the time.
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def cgroup_quota(cgroup_root: Path = CGROUP_ROOT) -> float | None:
    """CPUs the cgroup may use (quota / period), or None when unlimited or unknown.

    cgroup v2 says "max 100000" (or "150000 100000") in cpu.max; v1 keeps the two numbers in
    cpu.cfs_quota_us (-1 when unlimited) and cpu.cfs_period_us.
    """
    v2 = _read(cgroup_root / "cpu.max")
    if v2 is not None:
        quota, _, period = v2.partition(" ")
        return _ratio(quota, period)
    v1 = cgroup_root / "cpu"
    quota_us, period_us = _read(v1 / "cpu.cfs_quota_us"), _read(v1 / "cpu.cfs_period_us")
    if quota_us is None or period_us is None:
        return None
    return _ratio(quota_us, period_us)


def _ratio(quota: str, period: str) -> float | None:
    try:
        quota_value, period_value = int(quota), int(period)
    except ValueError:  # "max": no quota
        return None
    if quota_value <= 0 or period_value <= 0:
        return None
    return quota_value / period_value


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None
