"""Interrupt a node's thread when its task is cancelled (Dask cannot stop a running thread)."""

from __future__ import annotations

import ctypes
import threading
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin


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
    socket read, a numpy kernel) stops when that call returns.
    """

    name = "covalent-cancel"

    def setup(self, worker: Any) -> None:
        self.worker = worker

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if start == "executing" and finish in ("cancelled", "released", "forgotten"):
            for ident, running in list(self.worker.active_threads.items()):
                if running == key:
                    interrupts.interrupt(ident)
