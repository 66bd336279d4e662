"""The embedded store: SQLite in WAL mode in the data dir, plus its blob directory.

Every call runs on the store's one thread, so the connection is only ever used by one thread
and writes are serialised (a write is ``BEGIN IMMEDIATE`` ... ``COMMIT``). SQLite's errors
leave as the protocol's: a database another process holds locked is ``StoreBusy`` (after
SQLite's own 5 s wait), a full disk or a file size limit ``StoreFull``, anything else
``StoreError``. Opening checks the schema version read-only first, so a database from a newer
version is refused without a byte written, then applies the migrations it lacks (``schema``).
"""

from __future__ import annotations

import asyncio
import errno
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from ..errors import StoreBusy, StoreError, StoreFull
from ..protocol import now_iso
from . import schema
from .sql import Db, Dialect
from .sqlstore import SqlStore

T = TypeVar("T")
P = ParamSpec("P")

# Sort keys of the listing: fixed SQL expressions chosen by name, never user text.
SQLITE = Dialect(
    name="sqlite", blob="BLOB", bigint="INTEGER", table_suffix=" WITHOUT ROWID", like="LIKE",
    bytewise="", ids_in="{} IN (SELECT value FROM json_each(?))",
    sorts={"created": "created_at", "started": "COALESCE(start_time, created_at)",
           "name": "name COLLATE NOCASE", "status": "status",
           "runtime": "julianday(COALESCE(end_time, strftime('%Y-%m-%dT%H:%M:%f', 'now')))"
                      " - julianday(start_time)"})

_FULL_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


class SqliteStore(SqlStore):
    """A ``DispatchStore`` on one SQLite file and a blob directory."""

    dialect = SQLITE
    duplicate = (sqlite3.IntegrityError,)

    def __init__(self, db_path: Path, blob_dir: Path,
                 storage_options: dict[str, Any] | None = None, store_root: str | None = None
                 ) -> None:
        super().__init__(blob_dir, storage_options, store_root)
        self.db_path = db_path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="covalent-store")
        self._db: sqlite3.Connection | None = None

    def describe(self) -> str:
        return f"SQLite {self.db_path}"

    def connections(self) -> int:
        return 0 if self._db is None else 1

    def _stored_version(self) -> int:
        """The file's schema version, read without writing a byte (0: no file yet, or from
        before versions)."""
        if not self.db_path.exists():
            return 0
        # Without a WAL file everything is in the main file: read it as immutable, which
        # creates no -wal/-shm file beside it; with one, read-only (the WAL may hold the latest).
        wal = self.db_path.with_name(self.db_path.name + "-wal").exists()
        mode = "mode=ro" if wal else "immutable=1"
        ro = sqlite3.connect(f"{self.db_path.absolute().as_uri()}?{mode}", uri=True)
        try:
            return schema.current_version(ro, SQLITE)
        finally:
            ro.close()

    def _open(self) -> None:
        schema.check_version(self._stored_version(), self.describe())
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            self._db = db
            while self._upgrade_step(db):
                pass
        except BaseException:
            self._db = None
            db.close()
            raise

    def _upgrade_step(self, db: sqlite3.Connection) -> bool:
        """Apply the next migration, if any, in a transaction of its own; False when done."""
        db.execute("BEGIN IMMEDIATE")
        try:
            version = schema.current_version(db, SQLITE)
            schema.check_version(version, self.describe())
            todo = schema.pending(version)
            if todo:
                schema.migrate(db, SQLITE, self, todo[0], now_iso())
            db.execute("COMMIT")
            return bool(todo)
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    # -- running SQL on the store's thread -------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, _translated, fn,
                                                                *args)

    async def _read(self, fn: Callable[Concatenate[Db, P], T], *args: P.args,
                    **kwargs: P.kwargs) -> T:
        return await self._call(lambda: fn(self.db, *args, **kwargs))

    async def _snapshot(self, fn: Callable[Concatenate[Db, P], T], *args: P.args,
                        **kwargs: P.kwargs) -> T:
        return await self._call(self._transaction, "BEGIN", lambda db: fn(db, *args, **kwargs))

    async def _write(self, fn: Callable[Concatenate[Db, P], T], *args: P.args,
                     **kwargs: P.kwargs) -> T:
        return await self._call(self._transaction, "BEGIN IMMEDIATE",
                                lambda db: fn(db, *args, **kwargs))

    def _transaction(self, begin: str, body: Callable[[sqlite3.Connection], T]) -> T:
        db = self.db
        db.execute(begin)
        try:
            out = body(db)
            db.execute("COMMIT")
            return out
        except BaseException:
            if db.in_transaction:  # SQLite already rolled back after an I/O error
                db.execute("ROLLBACK")
            raise


def _translated(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)``, with SQLite's errors (and a full disk's) raised as the protocol's."""
    try:
        return fn(*args)
    except sqlite3.Error as exc:
        raise store_error(exc) from exc
    except OSError as exc:  # a blob file: only a full disk is the store's to say
        if exc.errno in _FULL_ERRNOS:
            raise StoreFull(f"the dispatcher cannot write to its store: {exc}") from exc
        raise


def store_error(exc: sqlite3.Error) -> StoreError:
    """The protocol's error for an SQLite error.

    >>> type(store_error(sqlite3.OperationalError("database is locked"))).__name__
    'StoreBusy'
    >>> type(store_error(sqlite3.OperationalError("database or disk is full"))).__name__
    'StoreFull'
    """
    text = str(exc).lower()
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
        return StoreBusy("the dispatcher's store is locked by another process; retry shortly")
    if "full" in text or "disk i/o" in text:
        return StoreFull(f"the dispatcher cannot write to its store: {type(exc).__name__}: {exc}")
    return StoreError(f"the store refused it: {type(exc).__name__}: {exc}")
