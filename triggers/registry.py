"""The one registry of built-in trigger kinds: class name -> (class, how the server observes it).

Adding a kind: its class in ``covalent/triggers/`` (built from ``to_dict()`` by
``BaseTrigger.from_dict``), its observer coroutine here in ``triggers/``, and one line in
``KINDS``. Nothing is unpickled: a built-in trigger is rebuilt from its JSON.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from covalent.triggers import BaseTrigger, DatabaseTrigger, DirTrigger, SQLiteTrigger, TimeTrigger

from .observers import observe_dir, observe_time
from .observing import Observing
from .polling import observe_polling


@dataclass(frozen=True, slots=True)
class Kind:
    cls: type[BaseTrigger]
    observe: Callable[[Any, Observing], Awaitable[str]]


KINDS: dict[str, Kind] = {
    "TimeTrigger": Kind(TimeTrigger, observe_time),
    "DirTrigger": Kind(DirTrigger, observe_dir),
    "SQLiteTrigger": Kind(SQLiteTrigger, observe_polling),
    "DatabaseTrigger": Kind(DatabaseTrigger, observe_polling),
}


def from_dict(d: dict[str, Any]) -> BaseTrigger:
    """A built-in trigger from its dict; raises ValueError/TypeError/KeyError on a bad one."""
    kind = KINDS.get(str(d.get("name")))
    if kind is None:
        raise ValueError(f"unknown trigger {d.get('name')!r} (built-in: {', '.join(KINDS)}); "
                         "custom triggers are sent pickled")
    return kind.cls.from_dict(d)


async def observe(trigger: BaseTrigger, ctx: Observing) -> str:
    """Observe a built-in trigger with its kind's observer until it ends; the reason."""
    return await KINDS[type(trigger).__name__].observe(trigger, ctx)
