"""What the runner holds for each running dispatch (``Run``), the order of concurrent dispatches
on the cluster (``submission_priority``), and letting go of futures without holding the loop
(``release``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from distributed import Future

from .compile import Compiled, Preset
from .machine import DispatchMachine, Instruction, Submit

Key = tuple[str, int]


def submission_priority(started: str) -> int:
    """Dask user priority of a dispatch's tasks: earlier start, higher priority.

    >>> submission_priority("2026-01-01T00:00:00+00:00") > submission_priority("2026-01-01T00:00:01+00:00")
    True
    """
    if not started:
        return 0
    return -int(datetime.fromisoformat(started).timestamp() * 1_000_000)


@dataclass(eq=False)
class Prepared:
    """A new dispatch's machine and the instructions it started with, made while the dispatch
    was being stored, and its first submission's Dask graph (or why it could not be made)."""

    machine: DispatchMachine
    first: list[Instruction]
    submit: Submit | None = None
    compiled: Compiled | None = None
    error: Exception | None = None


@dataclass(eq=False)
class Run:
    """What the runner holds for one running dispatch: its machine and its Dask futures."""

    machine: DispatchMachine
    priority: int
    known: dict[int, Preset]  # outputs known at submit (reused, large parameters, resumed)
    by_key: dict[Key, int] = field(default_factory=dict)  # every submission's task keys
    futures: dict[int, Future[Any]] = field(default_factory=dict)  # the current submission's sinks
    waiter: asyncio.Task[None] | None = None
    prepared: Prepared | None = None  # its first submission, compiled before it was stored
    epoch: int = 0  # replicas: the tenure of its lease this runner holds (0: one server)
    replay: bool = False  # taken over: read the outcomes nobody heard before asking workers
    held: list[Any] = field(default_factory=list)  # first updates, recorded once submitted
    ended_unheard: set[int] = field(default_factory=set)  # in memory at the last FindRunning

    @property
    def dispatch_id(self) -> str:
        return self.machine.dispatch_id


async def release(futures: list[Future[Any]]) -> None:
    """Let go of futures in slices (releasing one sends a message per key), each released
    outright: not when the last reference to it goes, which a reference cycle can put off until
    the next full garbage collection (a cancelled waiter's traceback held a finished
    dispatch's futures, and with them its graph's tasks on the cluster, for as long as the
    dispatcher stayed idle)."""
    while futures:
        for future in futures[-1000:]:
            future.release()  # type: ignore[no-untyped-call]
        del futures[-1000:]
        await asyncio.sleep(0)
