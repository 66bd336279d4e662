"""What SQLiteTrigger and DatabaseTrigger share: poll a table, fire after N polls that find rows.

As in Covalent, each poll selects the rows of ``table_name`` that match every one of
``where_clauses`` (SQL conditions, joined with AND); a poll that finds any counts as an event,
and every ``trigger_after_n`` events the trigger fires. So a trigger keeps firing while
matching rows exist: delete the rows it acted on, or narrow ``where_clauses`` to new ones.

Registered with the dispatcher, it is polled there, one poll at a time on a thread of its own
(``triggers.polling``); a poll's failure is shown in ``/triggers`` (``last_error``) and polling
goes on. ``observe()`` here is Covalent's stand-alone, blocking form.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
from typing import Any

from .base import BaseTrigger

log = logging.getLogger("covalent.triggers")

_PLAIN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)*$")


class PollingTrigger(BaseTrigger):
    """Base of the database triggers: ``poll()`` says whether matching rows exist."""

    _state_keys = ("event_count",)
    POLL_TIMEOUT_S = 30.0  # a poll (connect + query) longer than this is reported as an error

    def __init__(self, db_path: str | os.PathLike[str], table_name: str, poll_interval: float = 1,
                 where_clauses: list[str] | str | None = None, trigger_after_n: int = 1,
                 lattice_dispatch_id: str | None = None, dispatcher_addr: str | None = None,
                 triggers_server_addr: str | None = None) -> None:
        super().__init__(lattice_dispatch_id, dispatcher_addr, triggers_server_addr)
        if not isinstance(db_path, str | os.PathLike) or not str(db_path):
            raise ValueError(f"db_path must be a path or a URL, got {db_path!r}")
        if not isinstance(table_name, str) or not table_name.strip():
            raise ValueError(f"table_name must be a table's name, got {table_name!r}")
        if isinstance(poll_interval, bool) or not isinstance(poll_interval, int | float) \
                or not math.isfinite(poll_interval) or not 0 < poll_interval <= 86400:
            raise ValueError(f"poll_interval must be seconds between 0 and 86400, got {poll_interval!r}")
        if isinstance(trigger_after_n, bool) or not isinstance(trigger_after_n, int) \
                or trigger_after_n < 1:
            raise ValueError(f"trigger_after_n must be a whole number >= 1, got {trigger_after_n!r}")
        self.db_path = str(db_path)
        self.table_name = table_name
        self.poll_interval = poll_interval
        self.where_clauses = _clauses(where_clauses)
        self.trigger_after_n = trigger_after_n
        self.event_count = 0
        self.stop_flag = threading.Event()

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "where_clauses":  # set after construction too, as Covalent's how-to does
            value = _clauses(value)
        super().__setattr__(name, value)

    # -- what a subclass implements ----------------------------------------------------------

    def poll(self) -> bool:
        """Whether matching rows exist now (blocking; raises the database's error)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what polling holds (connections)."""

    # -- shared --------------------------------------------------------------------------------

    def query(self, quote: str = '"') -> str:
        """``SELECT 1 FROM <table> [WHERE (c1) AND (c2)] LIMIT 1``: a name that is not a plain
        (dotted) identifier is quoted, so ``"my table"`` works and cannot inject SQL.

        >>> PollingTrigger("x.db", "jobs", where_clauses=["status = 'new'", "id > 2"]).query()
        "SELECT 1 FROM jobs WHERE (status = 'new') AND (id > 2) LIMIT 1"
        >>> PollingTrigger("x.db", "my table").query()
        'SELECT 1 FROM "my table" LIMIT 1'
        """
        table = self.table_name.strip()
        if not _PLAIN_NAME.match(table):
            table = quote + table.replace(quote, quote * 2) + quote
        where = " AND ".join(f"({c})" for c in self.where_clauses)
        return f"SELECT 1 FROM {table}" + (f" WHERE {where}" if where else "") + " LIMIT 1"

    def counted(self, found: bool) -> bool:
        """Count a poll; True when this poll completes ``trigger_after_n`` events (fire now)."""
        if not found:
            return False
        self.event_count += 1
        if self.event_count >= self.trigger_after_n:
            self.event_count = 0
            return True
        return False

    def observe(self) -> None:
        """Blocking: poll every ``poll_interval`` seconds until ``stop()``; a failed poll is
        logged and polling goes on."""
        flag = self.stop_flag if isinstance(self.stop_flag, threading.Event) else threading.Event()
        self.stop_flag = flag
        try:
            while not flag.is_set():
                try:
                    fire = self.counted(self.poll())
                except Exception as exc:  # the database's errors are many; report, go on
                    log.warning("%s poll of %s failed: %s", type(self).__name__, self.table_name, exc)
                    fire = False
                if fire:
                    self.trigger()
                flag.wait(self.poll_interval)
        finally:
            self.close()

    def stop(self) -> None:
        if isinstance(self.stop_flag, threading.Event):
            self.stop_flag.set()

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "db_path": self.db_path, "table_name": self.table_name,
                "poll_interval": self.poll_interval, "where_clauses": list(self.where_clauses),
                "trigger_after_n": self.trigger_after_n, "event_count": self.event_count}


def _clauses(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(c, str) and c.strip() for c in value):
        raise ValueError(f"where_clauses must be a list of SQL conditions, got {value!r}")
    return list(value)
