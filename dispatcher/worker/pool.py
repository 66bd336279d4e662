"""Keep each worker's thread pool whole: a thread the pool counts but that has died is replaced.

A task that leaves Dask's pool (``distributed.secede``, ``worker_client()``) and comes back
(``distributed.rejoin``) waits until a pool thread hands it its slot: that thread puts the
waiting one in the pool's set of threads and ends. If the task's thread dies in between (a
cancel or a time limit raised in it as ``rejoin`` returns: ``interrupts`` raises at a node's
next bytecode), the pool counts a dead thread: on a one-thread worker no task ever runs again,
and the dispatches sent to it stay RUNNING for good. Our own sublattice nodes never rejoin
(``worker/sublattice.py``); user code may. ``PoolGuard`` looks every ``CHECK_S`` for threads of
the pool (and of its list of threads waiting to rejoin) that have ended, drops them and starts
their replacements.

This reads ``distributed.threadpoolexecutor.ThreadPoolExecutor``'s private state
(``_threads``, ``_rejoin_list``, ``_rejoin_lock``, ``_adjust_thread_count``) under the locks
Dask itself takes; ``tests/dispatcher/test_interrupts.py`` fails if that changes.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from distributed import WorkerPlugin
from distributed.threadpoolexecutor import ThreadPoolExecutor, threads_lock
from tornado.ioloop import PeriodicCallback

log = logging.getLogger("covalent.worker")

CHECK_S = 0.5


def _ended(thread: threading.Thread) -> bool:
    # A thread the pool has just created is not alive until it starts; it has no ident yet.
    return thread.ident is not None and not thread.is_alive()


def heal(pool: Any) -> int:
    """Drop the ended threads ``pool`` still counts or lets rejoin, start as many new ones;
    how many were dropped."""
    if not isinstance(pool, ThreadPoolExecutor):
        return 0
    # The order Dask takes them in: threads_lock (secede, shutdown), then _shutdown_lock
    # (submit, shutdown); _rejoin_lock is taken alone (a pool thread handing over its slot).
    with threads_lock, pool._shutdown_lock, pool._rejoin_lock:
        if pool._shutdown:
            return 0
        pool._rejoin_list[:] = [(t, ev) for t, ev in pool._rejoin_list if not _ended(t)]
        dead = [t for t in pool._threads if _ended(t)]
        for thread in dead:
            pool._threads.discard(thread)
        for _ in dead:
            pool._adjust_thread_count()  # one thread per call, up to the pool's size
    return len(dead)


class PoolGuard(WorkerPlugin):
    """On each worker: every ``CHECK_S``, heal each of its thread pools."""

    name = "covalent-pool-guard"

    def __init__(self) -> None:
        self._callback: PeriodicCallback | None = None

    def setup(self, worker: Any) -> None:
        def check() -> None:
            for name, pool in list(worker.executors.items()):
                if lost := heal(pool):
                    log.warning("worker pool %r had %d ended thread(s) counted as running "
                                "(a task died while rejoining it); replaced them", name, lost)

        self._callback = PeriodicCallback(check, CHECK_S * 1000)
        self._callback.start()  # setup runs on the worker's event loop

    def teardown(self, worker: Any) -> None:
        if self._callback is not None:
            self._callback.stop()

    def __getstate__(self) -> dict[str, Any]:
        return {"_callback": None}
