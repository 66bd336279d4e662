"""``available_triggers``: the trigger classes of this package by name, as in Covalent
(``available_triggers["DirTrigger"]``; an unknown name gives None)."""

from __future__ import annotations

from typing import Any

from .base import BaseTrigger


class TriggerLoader:
    """A mapping of trigger class names to classes; ``loader[name]`` is None when unknown."""

    def __init__(self, classes: list[type[BaseTrigger]]) -> None:
        self.available_triggers: dict[str, type[BaseTrigger]] = {c.__name__: c for c in classes}

    def __getitem__(self, key: str) -> type[BaseTrigger] | None:
        return self.available_triggers.get(key)

    def __setitem__(self, key: str, value: type[BaseTrigger]) -> None:
        self.available_triggers[key] = value

    def __contains__(self, key: Any) -> bool:
        return key in self.available_triggers

    def __repr__(self) -> str:
        return f"TriggerLoader({sorted(self.available_triggers)})"
