"""Interrupt a node's thread when its task is cancelled (Dask cannot stop a running thread);
restart its worker through the nanny when it is blocked in a C call and does not stop."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import threading
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

log = logging.getLogger("covalent.worker")

DEFAULT_GRACE_S = 10.0
RESTART_TIMEOUT_S = 5.0  # how long the nanny lets the worker close before it kills it


class TaskInterrupted(BaseException):
    """Raised inside a running node whose dispatch (or node) was cancelled."""


class Interrupts:
    """Which worker threads are inside a node's user code, so a cancel can interrupt them.

    Worker-process state (there is no app object on a worker). A thread is marked while it
    runs user code; the cancel plugin injects ``TaskInterrupted`` only into a marked thread,
    and unmarking clears any injection still pending, so it never lands in Dask's own code.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.threads: set[int] = set()

    def enter(self) -> None:
        with self.lock:
            self.threads.add(threading.get_ident())

    def leave(self) -> None:
        ident = threading.get_ident()
        with self.lock:
            self.threads.discard(ident)
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), None)

    def inside(self, ident: int) -> bool:
        """True while thread ``ident`` is in a node's user code."""
        with self.lock:
            return ident in self.threads

    def interrupt(self, ident: int, exc: type[BaseException] = TaskInterrupted) -> bool:
        """Raise ``exc`` in thread ``ident`` if it is in user code (a cancel, a time limit)."""
        with self.lock:
            if ident not in self.threads:
                return False
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(exc))
            return True


interrupts = Interrupts()


class CancelPlugin(WorkerPlugin):
    """Worker plugin: when a running node's key is cancelled, interrupt its thread.

    This raises ``TaskInterrupted`` in the thread at its next Python bytecode, so pure-Python
    work stops and the worker's thread is freed. Code blocked inside a C call (a sleep, a
    socket read, a numpy kernel) runs no bytecode: if it is still there after the grace period
    (``--time-limit-grace``), the worker process is restarted through its nanny, as for a time
    limit, so a cancelled ``sleep(3600)`` does not hold a worker slot for an hour (Dask runs
    again elsewhere what else that worker was running).
    """

    name = "covalent-cancel"

    def setup(self, worker: Any) -> None:
        self.worker = worker

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if start == "executing" and finish in ("cancelled", "released", "forgotten"):
            for ident, running in list(self.worker.active_threads.items()):
                if running == key and interrupts.interrupt(ident):
                    try:  # transitions run on the worker's event loop
                        loop = asyncio.get_running_loop()
                    except RuntimeError:
                        return
                    loop.call_later(grace_of(self.worker), self._check_stopped, ident, key)

    def _check_stopped(self, ident: int, key: Any) -> None:
        if self.worker.active_threads.get(ident) == key and interrupts.inside(ident):
            log.warning("restarting this worker: cancelled task %s is blocked in a call that "
                        "does not return", key)
            asyncio.ensure_future(restart_worker(self.worker, "covalent-cancel"))


async def restart_worker(worker: Any, reason: str) -> bool:
    """Ask ``worker``'s nanny to restart its process (which frees every thread); False when
    it has no nanny."""
    if not worker.nanny:
        return False
    try:
        async with worker.rpc(worker.nanny) as nanny:
            await nanny.kill(reason=reason, timeout=RESTART_TIMEOUT_S)
    except Exception as exc:  # the nanny closes this very connection as it kills us
        log.info("nanny kill: %s", exc)
    return True


def grace_of(worker: Any) -> float:
    """Seconds a node gets to stop after an interrupt (``--time-limit-grace``)."""
    from .contact import WorkerContext

    plugin = worker.plugins.get(WorkerContext.name)
    return plugin.time_limit_grace if isinstance(plugin, WorkerContext) else DEFAULT_GRACE_S
