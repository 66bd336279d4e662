"""``covalent.triggers``: BaseTrigger, DirTrigger and TimeTrigger (re-exported from ``triggers``)."""

from __future__ import annotations

from triggers import BaseTrigger, DirTrigger, TimeTrigger

__all__ = ["BaseTrigger", "DirTrigger", "TimeTrigger"]
