"""Triggers: start or redispatch a stored dispatch when time passes or files change.

``from covalent.triggers import BaseTrigger, DirTrigger, TimeTrigger``, as in Covalent.
"""

from __future__ import annotations

from .base import BaseTrigger
from .dir_trigger import DirTrigger
from .time_trigger import TimeTrigger

__all__ = ["BaseTrigger", "DirTrigger", "TimeTrigger"]
