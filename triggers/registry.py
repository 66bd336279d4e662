"""Rebuild built-in triggers from their ``to_dict()`` without unpickling anything."""

from __future__ import annotations

import math
from typing import Any

from covalent.triggers import BaseTrigger, DirTrigger, TimeTrigger

BUILTIN: dict[str, type[BaseTrigger]] = {"DirTrigger": DirTrigger, "TimeTrigger": TimeTrigger}


def from_dict(d: dict[str, Any]) -> BaseTrigger:
    """A built-in trigger from its dict; raises ValueError/TypeError on a bad one."""
    name = d.get("name")
    common = {"lattice_dispatch_id": _opt_str(d.get("lattice_dispatch_id")),
              "dispatcher_addr": _opt_str(d.get("dispatcher_addr")),
              "triggers_server_addr": _opt_str(d.get("triggers_server_addr"))}
    trigger: BaseTrigger
    if name == "TimeTrigger":
        trigger = TimeTrigger(d["time_gap"], **common)
    elif name == "DirTrigger":
        trigger = DirTrigger(str(d["dir_path"]), d["event_names"], _count(d.get("batch_size", 1)),
                             recursive=bool(d.get("recursive", False)), **common)
        trigger.n_changes = _count(d.get("n_changes", 0), minimum=0)
    else:
        raise ValueError(f"unknown trigger {name!r}; custom triggers are sent pickled")
    trigger.new_dispatch_ids = [str(x) for x in d.get("new_dispatch_ids") or []]
    return trigger


def _count(value: Any, minimum: int = 1) -> int:
    """An integer count from JSON: 3 or 3.0, never 1e400, True or "3"."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"expected a whole number, got {value!r}")
    if value != int(value) or value < minimum:
        raise ValueError(f"expected a whole number >= {minimum}, got {value!r}")
    return int(value)


def _opt_str(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"expected a string, got {value!r}")
