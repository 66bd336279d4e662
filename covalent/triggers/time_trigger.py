"""TimeTrigger: fire every ``time_gap`` seconds.

Registered with the dispatcher, it runs there as an asyncio timer; ``observe()`` here is the
stand-alone, blocking form, as in Covalent.
"""

from __future__ import annotations

import threading
from typing import Any

from .base import BaseTrigger


class TimeTrigger(BaseTrigger):
    """Perform a trigger action every ``time_gap`` seconds."""

    def __init__(self, time_gap: float, lattice_dispatch_id: str | None = None,
                 dispatcher_addr: str | None = None, triggers_server_addr: str | None = None) -> None:
        super().__init__(lattice_dispatch_id, dispatcher_addr, triggers_server_addr)
        if isinstance(time_gap, bool) or not isinstance(time_gap, int | float) or not 0 < time_gap < 1e9:
            raise ValueError(f"time_gap must be a positive number of seconds, got {time_gap!r}")
        self.time_gap = float(time_gap)
        self.stop_flag = threading.Event()

    def observe(self) -> None:
        """Blocking: trigger every ``time_gap`` seconds until ``stop()``."""
        flag = self.stop_flag if isinstance(self.stop_flag, threading.Event) else threading.Event()
        self.stop_flag = flag
        while not flag.wait(self.time_gap):
            self.trigger()

    def stop(self) -> None:
        if isinstance(self.stop_flag, threading.Event):
            self.stop_flag.set()

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "time_gap": self.time_gap}
