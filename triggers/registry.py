"""Rebuild built-in triggers from their ``to_dict()`` without unpickling anything."""

from __future__ import annotations

from typing import Any

from .base import BaseTrigger
from .dir_trigger import DirTrigger
from .time_trigger import TimeTrigger

BUILTIN: dict[str, type[BaseTrigger]] = {"DirTrigger": DirTrigger, "TimeTrigger": TimeTrigger}


def from_dict(d: dict[str, Any]) -> BaseTrigger:
    """A built-in trigger from its dict; raises ValueError/TypeError on a bad one."""
    name = d.get("name")
    common = {"lattice_dispatch_id": d.get("lattice_dispatch_id"),
              "dispatcher_addr": d.get("dispatcher_addr"),
              "triggers_server_addr": d.get("triggers_server_addr")}
    trigger: BaseTrigger
    if name == "TimeTrigger":
        trigger = TimeTrigger(d["time_gap"], **common)
    elif name == "DirTrigger":
        trigger = DirTrigger(d["dir_path"], d["event_names"], int(d.get("batch_size", 1)),
                             recursive=bool(d.get("recursive", False)), **common)
    else:
        raise ValueError(f"unknown trigger {name!r}; custom triggers are sent pickled")
    trigger.new_dispatch_ids = [str(x) for x in d.get("new_dispatch_ids") or []]
    return trigger
