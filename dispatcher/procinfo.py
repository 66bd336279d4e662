"""Facts about local processes read from /proc (Linux): state, CPU time, children, memory, I/O.

``/status`` reports the server's own memory with it; the benchmarks measure CPU and peak memory
per process, and the fault tests which workers a dispatcher started and whether they are gone.
Off Linux the memory figures are NaN and the process lists empty.
"""

from __future__ import annotations

import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first), or None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (0 if it is gone)."""
    fields = stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / _TICK if fields else 0.0


def children(pid: int) -> list[int]:
    """PIDs whose parent is ``pid``."""
    out: list[int] = []
    if not Path("/proc").is_dir():
        return out
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            fields = stat_fields(int(d.name))
            if fields is not None and int(fields[1]) == pid:
                out.append(int(d.name))
    return out


def _status_mib(pid: int, field: str) -> float:
    """A memory field of /proc/<pid>/status in MiB (NaN if absent or the process is gone)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return float("nan")
    for line in lines:
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib(pid: int) -> float:
    """VmHWM: the process's peak resident set size since it started or since ``reset_peak_rss``."""
    return _status_mib(pid, "VmHWM")


def rss_mib(pid: int) -> float:
    """VmRSS: the process's resident set size now."""
    return _status_mib(pid, "VmRSS")


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0; needs ptrace rights); False if refused."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def bytes_read(pid: int) -> int:
    """rchar: bytes the process has read through system calls (files, pipes and sockets alike).

    What a process never read cannot have passed through it: the tests bound this to show that
    node outputs go from workers to the store without the dispatcher. -1 if unreadable.
    """
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("rchar:"):
                return int(line.split()[1])
    except OSError:
        pass
    return -1
