"""Stop the processes the benchmark started, by PID, never by name.

A started process gets SIGTERM, then SIGKILL after a grace period. Its worker processes
(children it spawned, recorded with their start time while it ran) are given a moment to exit
with it, and those still alive are killed: the recorded start time guards against a reused PID.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Any

from dispatcher.procinfo import children, stat_fields

Recorded = dict[int, str]  # pid -> start time (clock ticks after boot)


def record_children(pid: int) -> Recorded:
    """The children of ``pid`` now, with their start times."""
    out: Recorded = {}
    for child in children(pid):
        fields = stat_fields(child)
        if fields is not None:
            out[child] = fields[19]
    return out


def record_descendants(pid: int) -> Recorded:
    """``pid`` and every process below it now, with their start times."""
    out: Recorded = {}
    fields = stat_fields(pid)
    if fields is not None:
        out[pid] = fields[19]
    for child in children(pid):
        out.update(record_descendants(child))
    return out


def _still_ours(pid: int, start: str) -> bool:
    fields = stat_fields(pid)
    return fields is not None and fields[0] != "Z" and fields[19] == start


def stop_process(proc: subprocess.Popen[Any], recorded: Recorded, timeout: float = 30,
                 grace: float = 0) -> None:
    """Stop ``proc`` (SIGTERM, then SIGKILL), then kill any recorded child it left behind.

    ``grace``: seconds it may take to exit on its own (it was asked another way) first.
    """
    if grace:
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass  # it did not leave on its own: terminate it below
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    kill_leftovers(recorded)


def kill_leftovers(recorded: Recorded, wait: float = 10) -> None:
    """Give recorded processes ``wait`` seconds to exit, then SIGKILL those still running."""
    deadline = time.monotonic() + wait
    while any(_still_ours(p, s) for p, s in recorded.items()) and time.monotonic() < deadline:
        time.sleep(0.1)  # workers exit on their own once their nanny is gone: nothing to await
    for pid, start in recorded.items():
        if _still_ours(pid, start):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # it exited between the check and the kill, as we wanted


