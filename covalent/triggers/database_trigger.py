"""DatabaseTrigger: fire when rows appear in a table of any database SQLAlchemy reaches.

``db_path`` is a SQLAlchemy URL (``postgresql://user@host/db``, ``mysql+pymysql://...``,
``sqlite:////abs/path.db``); ``postgresql://`` uses psycopg when psycopg2 is not installed.
Each poll runs in a transaction that is rolled back (read-only where the driver supports it)
with a connection that is closed after it; PostgreSQL connections time out after 10 s and
their statements after ``POLL_TIMEOUT_S``. The driver must be installed where the dispatcher
runs (psycopg and pg8000 come with this package).
"""

from __future__ import annotations

import importlib.util
from typing import Any

from .polling import PollingTrigger


class DatabaseTrigger(PollingTrigger):
    """Trigger every ``trigger_after_n`` polls that find rows of ``table_name`` (matching
    ``where_clauses``) in the database at the SQLAlchemy URL ``db_path``."""

    def poll(self) -> bool:
        from sqlalchemy import text

        engine = self._engine()
        with engine.connect() as conn:
            readonly = conn.execution_options(postgresql_readonly=True) \
                if engine.dialect.name == "postgresql" else conn
            try:
                return readonly.execute(text(self.query())).first() is not None
            finally:
                conn.rollback()

    def _engine(self) -> Any:
        engine = self.__dict__.get("_engine_obj")
        if engine is None:
            from sqlalchemy import create_engine
            from sqlalchemy.engine import make_url
            from sqlalchemy.pool import NullPool

            url = make_url(self.db_path)
            connect_args: dict[str, Any] = {}
            if url.drivername == "postgresql" and importlib.util.find_spec("psycopg2") is None:
                url = url.set(drivername="postgresql+psycopg")
            if url.drivername in ("postgresql+psycopg", "postgresql+psycopg2", "postgresql"):
                connect_args = {"connect_timeout": 10, "options":
                                f"-c statement_timeout={int(self.POLL_TIMEOUT_S * 1000)}"}
            engine = create_engine(url, poolclass=NullPool, connect_args=connect_args)
            self.__dict__["_engine_obj"] = engine
        return engine

    def close(self) -> None:
        engine = self.__dict__.pop("_engine_obj", None)
        if engine is not None:
            engine.dispose()

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_engine_obj", None)
        return state
