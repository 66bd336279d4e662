"""Stop a node that runs past its executor's ``time_limit``, and free its worker slot.

At the limit, the node's thread is interrupted (``TimeLimitExceeded`` raised at its next Python
bytecode, as a cancel does): pure-Python work stops, ``run_node`` reports the node FAILED and
its thread is free. A thread blocked in a C call (a ``sleep``, a socket read, a native kernel)
does not run bytecode, so after a grace period the watchdog gives up on it: it reports the
failure itself, tells the worker the task failed (so the scheduler records it erred, or runs
it again when the executor has retries) and asks the worker's nanny to restart the worker
process, which frees the slot. A worker without a nanny cannot be restarted: the node is still
recorded FAILED, and the thread stays busy until the call returns.

Worker-process state, like ``announce``: one thread per process sleeps until the earliest
deadline of a node still running; a node that ends disarms its entry first.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from ..dask_graph import fail_task
from ..protocol import (OUTCOME_TOPIC, NodeSpec, NodeTaskError, now_iso, outcome_failed,
                        pack_outcome)
from .deadlines import Deadlines
from .interrupts import grace_of, interrupts, restart_worker

log = logging.getLogger("covalent.worker")


class TimeLimitExceeded(BaseException):
    """Raised inside a node that ran past its time limit (a BaseException, like
    KeyboardInterrupt, so ``except Exception`` in user code does not swallow it)."""


def limit_message(spec: NodeSpec) -> str:
    return (f"{spec.name!r} ran longer than its time limit of {spec.time_limit:g} s "
            f"(executor {spec.executor!r}) and was stopped")


@dataclass(slots=True)
class _Entry:
    spec: NodeSpec
    ident: int
    key: Any
    worker: Any
    start: str
    grace: float
    interrupted: bool = False
    escalated: bool = False


class Watchdog(Deadlines[_Entry]):
    """The time limits of the nodes running in this worker process."""

    def __init__(self) -> None:
        super().__init__("covalent-time-limits")

    def arm(self, spec: NodeSpec, start: str) -> int | None:
        """Watch the calling thread's node; None when it has no limit or runs off a worker."""
        if spec.time_limit <= 0:
            return None
        try:
            from distributed import get_worker

            worker = get_worker()
        except ValueError:
            return None  # a direct call in a test: no worker to report to
        key = worker.active_threads.get(threading.get_ident())
        entry = _Entry(spec, threading.get_ident(), key, worker, start, grace_of(worker))
        return self._push(entry, spec.time_limit)

    def disarm(self, token: int | None) -> bool:
        """The node ended; False if the watchdog already reported it (do not report again)."""
        if token is None:
            return True
        with self.cv:
            entry = self.running.pop(token, None)
            return entry is None or not entry.escalated

    def _loop(self) -> None:
        while True:
            with self.cv:
                token = self._wait_due()
                entry = self.running[token]
                if not entry.interrupted:
                    entry.interrupted = True
                    interrupts.interrupt(entry.ident, TimeLimitExceeded)
                    self._due_in(token, entry.grace)
                    continue
                entry.escalated = True  # run_node will not report it again
            entry.worker.loop.add_callback(_escalate, entry)


async def _escalate(entry: _Entry) -> None:
    """The node did not stop: record it FAILED, fail its task, restart the worker."""
    spec, worker = entry.spec, entry.worker
    message = (limit_message(spec) + f"; it did not stop within {entry.grace:g} s, so its "
               "worker process was restarted")
    worker.log_event(OUTCOME_TOPIC, pack_outcome(outcome_failed(
        spec, entry.start, now_iso(), "", "", "TimeLimitExceeded", message, "")))
    if not worker.nanny:
        log.warning("node %s of dispatch %s is past its time limit and blocked; this worker has "
                    "no nanny to restart it, so its thread stays busy", spec.node_id,
                    spec.dispatch_id)
        return
    fail_task(worker, entry.key, NodeTaskError(spec.node_id, "TimeLimitExceeded", message))
    log.warning("restarting this worker: node %s of dispatch %s is blocked past its time limit",
                spec.node_id, spec.dispatch_id)
    await restart_worker(worker, "covalent-time-limit")


watchdog = Watchdog()
