"""``ct.get_context()``: which dispatch and node the running task belongs to.

Inside an electron running on a worker it gives the dispatch id and the node id (``task_id``,
as in Covalent); anywhere else both are None. The worker sets it around each node
(``set_context``); it is per thread (a ContextVar), so concurrent tasks never see each other's.

>>> get_context()
Context(dispatch_id=None, task_id=None)
>>> with set_context("d-1", 3):
...     get_context().task_id
3
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Context:
    """The running task's dispatch id and node id (None outside a task)."""

    dispatch_id: str | None = None
    task_id: int | None = None


_CURRENT: ContextVar[Context] = ContextVar("covalent_task_context", default=Context())


def get_context() -> Context:
    """The context of the task running in this thread."""
    return _CURRENT.get()


@contextmanager
def set_context(dispatch_id: str, task_id: int) -> Iterator[None]:
    """Make ``get_context()`` answer ``dispatch_id`` and ``task_id`` inside the block."""
    token = _CURRENT.set(Context(dispatch_id, task_id))
    try:
        yield
    finally:
        _CURRENT.reset(token)
