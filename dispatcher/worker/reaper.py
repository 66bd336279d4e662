"""A worker process's own processes go with it.

A node may start processes that ``interrupts`` never hears of: ``os.system``,
``os.posix_spawn``, ``os.fork``, a C library's spawn. A cancel or a time limit kills what
``subprocess`` started; these it cannot tell apart, so they used to outlive even the restart
of their worker process (re-parented to init), and after a dispatcher killed with ``kill -9``
a resumed node ran next to the copy its first run had started.

So whenever a worker process goes, every process below it goes first:

- before it asks its nanny for a restart (a cancelled node blocked, a time limit passed:
  ``interrupts.restart_worker``);
- when it closes (``dask_teardown``, the embedded workers' preload);
- when its parent is gone (the dispatcher killed): Dask's worker process then leaves at once
  through ``os._exit``, which kills them first here.

Processes that left the tree on purpose (a daemon that forked twice) are not found: they
belong to init, as they would outside Dask.
"""

from __future__ import annotations

import os
from typing import Any, NoReturn

import psutil


def kill_descendants() -> int:
    """SIGKILL every process below this one; how many there were."""
    try:
        below = psutil.Process().children(recursive=True)
    except psutil.Error:
        return 0
    for proc in below:
        try:
            proc.kill()
        except psutil.Error:
            pass  # ended meanwhile
    return len(below)


_exit = os._exit


def _exit_with_descendants(status: int) -> NoReturn:
    kill_descendants()
    _exit(status)


def dask_setup(worker: Any) -> None:
    # Dask's worker process leaves with os._exit the moment its parent (the dispatcher, where
    # its nanny lives) is gone; what its nodes started goes first.
    os._exit = _exit_with_descendants


def dask_teardown(worker: Any) -> None:
    kill_descendants()
