"""SQLiteTrigger: fire when rows appear in a table of a SQLite file (see ``polling``).

The file is opened read-only for each poll (never created: a path that does not exist yet is
an error shown in ``/triggers`` until it does), with a busy timeout, so a writer holding the
database locked delays a poll instead of failing it.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

from .polling import PollingTrigger


class SQLiteTrigger(PollingTrigger):
    """Trigger every ``trigger_after_n`` polls that find rows of ``table_name`` (matching
    ``where_clauses``) in the SQLite file ``db_path``, polled every ``poll_interval`` seconds."""

    BUSY_TIMEOUT_S = 10.0

    def __init__(self, db_path: str | os.PathLike[str], table_name: str, poll_interval: float = 1,
                 where_clauses: list[str] | str | None = None, trigger_after_n: int = 1,
                 lattice_dispatch_id: str | None = None, dispatcher_addr: str | None = None,
                 triggers_server_addr: str | None = None) -> None:
        super().__init__(db_path, table_name, poll_interval, where_clauses, trigger_after_n,
                         lattice_dispatch_id, dispatcher_addr, triggers_server_addr)
        # the server polls it: a relative path means the client's working directory
        self.db_path = str(Path(self.db_path).expanduser().absolute())

    def poll(self) -> bool:
        uri = "file:" + quote(self.db_path) + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=self.BUSY_TIMEOUT_S)
        try:
            return conn.execute(self.query()).fetchone() is not None
        finally:
            conn.close()
