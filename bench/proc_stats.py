"""CPU time and peak memory of a process and its descendants, read from /proc."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")
_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcessTreeSample:
    """One reading of a server: CPU so far, and the peak resident memory so far."""

    # user+sys of the process, its live descendants, and the children they have reaped,
    # so a server that decodes in a process pool is charged for its workers too.
    cpu_seconds: float
    # Sum of VmHWM over the tree: exact for one process, an upper bound for several (their
    # peaks need not coincide and forked pages are shared).
    peak_rss_bytes: int
    processes: int


def sample_process_tree(pid: int) -> ProcessTreeSample:
    members = [pid, *_descendants(pid)]
    ticks = 0
    peak = 0
    for member in members:
        stat = _stat_fields(member)
        if stat is None:
            continue
        # Fields after the command: utime, stime, cutime, cstime are 14-17 in proc(5).
        ticks += sum(int(stat[index]) for index in (11, 12, 13, 14))
        peak += _peak_rss_bytes(member)
    return ProcessTreeSample(ticks / _TICKS_PER_SECOND, peak, len(members))


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        stat = _stat_fields(int(entry.name))
        if stat is not None:
            children.setdefault(int(stat[1]), []).append(int(entry.name))
    found: list[int] = []
    pending = [root]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name, from state (field 3) on."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may itself hold spaces or parentheses.
    return text[text.rindex(")") + 2 :].split()


def resident_bytes(pid: int) -> int:
    """VmRSS: what the process holds in memory now (0 once it is gone)."""
    return _status_bytes(pid, "VmRSS:")


def _peak_rss_bytes(pid: int) -> int:
    return _status_bytes(pid, "VmHWM:")


def _status_bytes(pid: int, field: str) -> int:
    try:
        status = (_PROC / str(pid) / "status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    return 0
