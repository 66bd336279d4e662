"""A worker process's own processes go with it.

A node may start processes that ``interrupts`` never hears of: ``os.system``,
``os.posix_spawn``, ``os.fork``, a C library's spawn. A cancel or a time limit kills what
``subprocess`` started; these it cannot tell apart from another node's, so they used to
outlive even the restart of their worker process (re-parented to init), and after a
dispatcher killed with ``kill -9`` a resumed node ran next to the copy its first run had
started.

So on the embedded cluster, whenever a worker process goes, every process that was below it
goes too, once the worker can no longer report anything (so no other node of that worker is
recorded FAILED for it: Dask runs those again elsewhere, as for any worker that dies):

- its nanny (``app.ReapingNanny``, in the dispatcher) notes the worker's descendants, kills
  the worker (a restart for a cancel or a time limit, the cluster's close), then kills them;
- when the dispatcher is killed, Dask's worker process leaves at once through ``os._exit``,
  which kills them first here (in the worker process itself only, not in processes forked
  from it).

A process that left the tree before (a daemon that forked twice) is not found: it belongs to
init, as it would outside Dask.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, NoReturn

import psutil


def descendants(pid: int) -> list[psutil.Process]:
    """The processes below ``pid`` now (none if it is gone)."""
    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.Error:
        return []


def kill_all(procs: Iterable[psutil.Process]) -> int:
    """SIGKILL each of ``procs`` still running (psutil checks a pid was not reused); how many."""
    killed = 0
    for proc in procs:
        try:
            if proc.is_running():
                proc.kill()
                killed += 1
        except psutil.Error:
            pass  # ended meanwhile
    return killed


_exit = os._exit
_worker_pid = 0  # the worker process (set up here); 0: not a worker


def _exit_with_descendants(status: int) -> NoReturn:
    if os.getpid() == _worker_pid:  # not in a process forked from it (multiprocessing, ...)
        kill_all(descendants(_worker_pid))
    _exit(status)


def dask_setup(worker: Any) -> None:
    # Dask's worker process leaves with os._exit the moment its parent (the dispatcher, where
    # its nanny lives) is gone; what its nodes started goes first.
    global _worker_pid
    _worker_pid = os.getpid()
    os._exit = _exit_with_descendants
