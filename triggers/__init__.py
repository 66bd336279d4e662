"""Observe registered triggers inside the dispatcher: timers, directory watches, custom ones.

The trigger classes users write and register live in the SDK (``covalent.triggers``); this
package is the server's side and imports them, never the other way round.
"""

from __future__ import annotations

from .registry import from_dict
from .supervisor import Observed, TriggerSupervisor

__all__ = ["Observed", "TriggerSupervisor", "from_dict"]
