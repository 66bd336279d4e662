"""What an observer coroutine is given: how to fire, when to stop, and where to report.

Every trigger kind's observer is ``async def observe(trigger, ctx: Observing) -> str`` (the
reason it ended); the registry (``registry.KINDS``) pairs it with its class.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .observers import DirWatcher

Fire = Callable[[], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Observing:
    """``fire()`` starts or redispatches the trigger's dispatch; ``ready`` is set once
    observing has begun; ``stopped`` is set to end it. ``report_error(text or None)`` shows (or
    clears) a problem that does not end the trigger; ``next_fire(loop time or None)`` says when
    a timer fires next. ``watcher`` is the server's one directory watcher. ``restored``: the
    trigger was registered before this server started (a DirTrigger then waits for a missing
    path instead of refusing it). ``counted()`` says that state ``to_dict()`` keeps (a
    DirTrigger's ``n_changes``) changed: the supervisor saves it soon after."""

    fire: Fire
    stopped: asyncio.Event
    ready: asyncio.Event
    watcher: DirWatcher
    report_error: Callable[[str | None], None]
    next_fire: Callable[[float | None], None]
    restored: bool
    counted: Callable[[], None]
