"""Read what a test's store holds, behind the server's back: its SQLite file (read-only, checked
for integrity) or its PostgreSQL database (``COVALENT_DB_URL``, set by the ``db_url`` fixture)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any


def rows(data_dir: Path, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """The rows of ``sql`` (``?`` placeholders) as dicts."""
    url = os.environ.get("COVALENT_DB_URL", "")
    if url:
        import psycopg
        from psycopg.rows import dict_row

        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            return list(conn.execute(sql.replace("?", "%s"), args).fetchall())
    db = sqlite3.connect(f"file:{data_dir / 'dispatches.db'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return [dict(r) for r in db.execute(sql, args)]
    finally:
        db.close()
