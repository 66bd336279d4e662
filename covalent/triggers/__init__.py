"""Triggers: start or redispatch a stored dispatch when time passes, files change or rows appear
in a database table.

``from covalent.triggers import BaseTrigger, DatabaseTrigger, DirTrigger, SQLiteTrigger,
TimeTrigger, available_triggers``, as in Covalent. A new kind of trigger is a class in a module
of this package plus its entry in the server's registry (``triggers/registry.py``).
"""

from __future__ import annotations

from .base import BaseTrigger
from .database_trigger import DatabaseTrigger
from .dir_trigger import DirTrigger
from .sqlite_trigger import SQLiteTrigger
from .time_trigger import TimeTrigger
from .trigger_loader import TriggerLoader

available_triggers = TriggerLoader([BaseTrigger, DatabaseTrigger, DirTrigger, SQLiteTrigger,
                                    TimeTrigger])

__all__ = ["BaseTrigger", "DatabaseTrigger", "DirTrigger", "SQLiteTrigger", "TimeTrigger",
           "available_triggers"]
