"""The store for shared deployments: PostgreSQL (psycopg 3 and its connection pool).

Chosen by ``--db-url postgresql://user:password@host:5432/db`` (or ``COVALENT_DB_URL``, or
``[database] url`` in the config file); blobs stay in the blob store (the data dir's
``blobs``, or ``--store-url``). Besides libpq's own parameters, the URL may carry
``pool_max`` (connections, default 4), ``pool_timeout`` (seconds a call waits for one,
default 10) and ``statement_timeout`` (milliseconds, default 60000).

Calls run on threads, each borrowing a pooled connection for one transaction (plain reads in
autocommit). The driver's errors leave as the protocol's: every connection taken past
``pool_timeout``, a statement past ``statement_timeout``, a deadlock or a lock not granted are
``StoreBusy``; a server that cannot be reached (restarting, down) ``StoreUnavailable``; a full
disk ``StoreFull``. A transaction that failed was rolled back: the caller (the recorder, or a
client through 503 + Retry-After) sends it again, so nothing acknowledged is lost.

Several dispatchers (replicas) may share one database: each running dispatch and active
trigger is acted on by the replica holding its lease (``leases``, ``dispatcher.replica``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import psycopg.errors as pg_errors
from psycopg_pool import ConnectionPool, PoolTimeout

from ..errors import StoreBusy, StoreError, StoreFull, StoreUnavailable
from ..protocol import now_iso
from . import schema
from .sql import Db, Dialect, Rows
from .sqlstore import SqlStore

log = logging.getLogger("covalent.dispatcher")

T = TypeVar("T")
P = ParamSpec("P")

POSTGRES = Dialect(
    name="postgresql", blob="BYTEA", bigint="BIGINT", table_suffix="", like="ILIKE",
    bytewise=' COLLATE "C"',
    ids_in="{} = ANY(ARRAY(SELECT jsonb_array_elements_text(?::jsonb)::int))",
    sorts={"created": "created_at", "started": "COALESCE(start_time, created_at)",
           "name": "lower(name)", "status": "status",
           "runtime": "(COALESCE(end_time::timestamptz, now()) - start_time::timestamptz)"})

MIGRATE_LOCK = 0x636F76_02  # transaction lock: one migration at a time
BLOB_LOCK = 0x636F76_03  # shared by writers naming blobs, exclusive while unused ones go
# Few connections: the dispatcher is one process (one GIL), and every busy connection is a
# thread the event loop shares the GIL with (10 measured worse under a 100,000-node dispatch).
OUR_PARAMS = {"pool_max": 4, "pool_timeout": 10.0, "statement_timeout": 60_000}
# How long the pool retries one lost connection before it starts over. psycopg_pool backs off
# exponentially (1, 2, 4, 8... s): after a 40 s outage the next try came 25 s after the
# database was back. Starting over each second keeps the dispatcher within about a second.
RECONNECT_S = 1.0


def split_url(url: str) -> tuple[str, dict[str, float]]:
    """libpq's URL (our own parameters taken out) and our parameters.

    >>> split_url("postgresql://u@h/db?pool_max=3&sslmode=require")
    ('postgresql://u@h/db?sslmode=require', {'pool_max': 3.0, 'pool_timeout': 10.0, 'statement_timeout': 60000.0})
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: float(v) for k, v in OUR_PARAMS.items()}
    rest = []
    for key, value in query:
        if key in OUR_PARAMS:
            try:
                ours[key] = float(value)
            except ValueError:
                raise ValueError(f"the database URL's {key} must be a number, got {value!r}") from None
        else:
            rest.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(rest))), ours


class PgDb:
    """A psycopg connection behind the shared SQL's ``Db``: ``?`` placeholders, and text
    without NUL characters (PostgreSQL refuses them; user code can print them)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def execute(self, sql: str, args: Sequence[Any] = (), /) -> Rows:
        return self.conn.execute(_pg(sql), _clean(args))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]], /) -> None:
        with self.conn.cursor() as cur:
            cur.executemany(_pg(sql), [_clean(r) for r in rows])


@functools.lru_cache(maxsize=512)
def _pg(sql: str) -> str:
    """``?`` placeholders as psycopg's ``%s`` (a literal ``%`` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


def _clean(args: Sequence[Any]) -> list[Any]:
    return [a.replace("\x00", "\\x00") if type(a) is str and "\x00" in a else a for a in args]


class PostgresStore(SqlStore):
    """A ``DispatchStore`` on a PostgreSQL database and a blob directory (or URL)."""

    dialect = POSTGRES
    duplicate = (pg_errors.UniqueViolation,)

    def __init__(self, url: str, blob_dir: Path, storage_options: dict[str, Any] | None = None,
                 store_root: str | None = None) -> None:
        super().__init__(blob_dir, storage_options, store_root)
        self.url = url
        self.conninfo, params = split_url(url)
        self.pool_max = max(1, int(params["pool_max"]))
        self.pool_timeout = params["pool_timeout"]
        self.statement_timeout = int(params["statement_timeout"])
        self.pool: ConnectionPool[psycopg.Connection[Any]] | None = None
        self._borrowed = 0  # connections out of the pool now
        self._borrowed_lock = threading.Lock()
        # A few more threads than connections: past the pool, calls wait for one (and give up
        # after pool_timeout with StoreBusy) rather than queue unseen behind the threads.
        self._executor = ThreadPoolExecutor(max_workers=self.pool_max + 4,
                                           thread_name_prefix="covalent-pg")

    def describe(self) -> str:
        from . import redact

        return f"PostgreSQL {redact(self.url)}"

    def connections(self) -> int:
        if self.pool is None:
            return 0
        return int(self.pool.get_stats().get("pool_size", 0))

    def _stored_version(self) -> int:
        """The database's schema version, read without writing."""
        with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=10) as conn:
            return schema.current_version(PgDb(conn), POSTGRES)

    def _open(self) -> None:
        try:
            self.pool = ConnectionPool(
                self.conninfo, min_size=1, max_size=self.pool_max, timeout=self.pool_timeout,
                open=False, check=ConnectionPool.check_connection, configure=self._configure,
                kwargs={"autocommit": True}, name="covalent", reconnect_timeout=RECONNECT_S,
                reconnect_failed=_reconnect_again)
            try:
                self.pool.open(wait=True, timeout=self.pool_timeout)
            except PoolTimeout:
                raise StoreUnavailable(f"cannot connect to {self.describe()} within "
                                       f"{self.pool_timeout:g} s{self._why_not()}") from None
            while self._in_transaction(self._upgrade_step):
                pass
        except BaseException:
            self._close()
            raise

    def _why_not(self) -> str:
        """Why a connection fails (a role or database that does not exist, a password, a
        setting PostgreSQL refuses), as PostgreSQL says it: the pool only logs it, and gives up
        saying it timed out."""
        try:
            with psycopg.connect(self.conninfo, connect_timeout=5) as conn:
                self._configure(conn)
                return ""
        except psycopg.Error as exc:
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            return f": {lines[-1]}" if lines else ""

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(f"SET statement_timeout = {self.statement_timeout:d}")

    def _upgrade_step(self, db: Db) -> bool:
        db.execute(f"SELECT pg_advisory_xact_lock({MIGRATE_LOCK})")
        version = schema.current_version(db, POSTGRES)
        schema.check_version(version, self.describe())
        todo = schema.pending(version)
        if todo:
            log.info("database schema: applying migration %d (%s)", todo[0].version,
                     todo[0].summary)
            schema.migrate(db, POSTGRES, self, todo[0], now_iso())
        return bool(todo)

    def _close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    # -- running SQL on pooled connections -------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, _translated, self.pool_max, self.pool_timeout, fn, *args)

    async def _read(self, fn: Callable[Concatenate[Db, P], T], *args: P.args,
                    **kwargs: P.kwargs) -> T:
        return await self._call(self._with_retry, lambda db: fn(db, *args, **kwargs), False)

    async def _snapshot(self, fn: Callable[Concatenate[Db, P], T], *args: P.args,
                        **kwargs: P.kwargs) -> T:
        def body(db: Db) -> T:
            db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            return fn(db, *args, **kwargs)

        return await self._call(self._with_retry, body, True)

    async def _write(self, fn: Callable[Concatenate[Db, P], T], *args: P.args,
                     **kwargs: P.kwargs) -> T:
        return await self._call(self._in_transaction, lambda db: fn(db, *args, **kwargs))

    def _with_retry(self, body: Callable[[Db], T], transaction: bool) -> T:
        """A read, tried once more on a fresh connection if its connection broke (a server
        restart the pool had not noticed yet)."""
        try:
            return self._in_transaction(body) if transaction else self._plain(body)
        except psycopg.OperationalError as exc:
            if isinstance(exc, PoolTimeout | pg_errors.QueryCanceled):
                raise
            return self._in_transaction(body) if transaction else self._plain(body)

    def _plain(self, body: Callable[[Db], T]) -> T:
        with self._borrow() as conn:
            return body(PgDb(conn))

    def _in_transaction(self, body: Callable[[Db], T]) -> T:
        """``body`` in one transaction; a deadlock (nothing committed) is tried again."""
        for attempt in range(3):
            try:
                with self._borrow() as conn, conn.transaction():
                    return body(PgDb(conn))
            except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure):
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    @contextlib.contextmanager
    def _borrow(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection. None free within a second: if the database cannot be reached
        at all, StoreUnavailable at once; else wait out ``pool_timeout`` (then PoolTimeout:
        StoreBusy when every connection is taken, StoreUnavailable when the pool is still
        reconnecting)."""
        pool = self.pool
        assert pool is not None, "store is not open"
        try:
            conn = pool.getconn(timeout=min(1.0, self.pool_timeout))
        except PoolTimeout:
            if not self._reachable():
                raise StoreUnavailable(f"the dispatcher's database cannot be reached "
                                       f"({self.describe()}); retry shortly") from None
            try:
                conn = pool.getconn(timeout=max(self.pool_timeout - 1.0, 0.1))
            except PoolTimeout:
                if self._borrowed >= self.pool_max:
                    raise
                raise StoreUnavailable(
                    f"the dispatcher is reconnecting to its database ({self.describe()}): no "
                    f"connection opened within {self.pool_timeout:g} s; retry shortly") from None
        with self._borrowed_lock:
            self._borrowed += 1
        try:
            yield conn
        finally:
            with self._borrowed_lock:
                self._borrowed -= 1
            pool.putconn(conn)

    def _reachable(self) -> bool:
        try:
            psycopg.connect(self.conninfo, connect_timeout=2).close()
            return True
        except psycopg.Error:
            return False

    # -- what PostgreSQL does its own way --------------------------------------------------

    def _guard_blobs(self, db: Db, exclusive: bool = False) -> None:
        fn = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        db.execute(f"SELECT {fn}({BLOB_LOCK})")

    def _insert_nodes(self, db: Db, rows: list[tuple[str, int, str, str, str]]) -> None:
        """New node rows with COPY: a 100,000-node dispatch in one stream, not 100,000 rows."""
        assert isinstance(db, PgDb)
        if len(rows) < 200:  # COPY's own exchange costs more than a few rows
            super()._insert_nodes(db, rows)
            return
        with db.conn.cursor() as cur, cur.copy(
                "COPY nodes (dispatch_id, node_id, name, kind, status) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(_clean(row))


def _reconnect_again(pool: ConnectionPool[Any]) -> None:
    """A connection not reopened within RECONNECT_S: try again with a fresh backoff (the
    pool's ``check()`` grows it back when it has room and is not growing already)."""
    if not pool.closed:
        pool.check()


def _translated(pool_max: int, pool_timeout: float, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)``, with psycopg's errors (and a full disk's) raised as the protocol's."""
    try:
        return fn(*args)
    except psycopg.Error as exc:
        raise store_error(exc, pool_max, pool_timeout) from exc
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise StoreFull(f"the dispatcher cannot write to its blob store: {exc}") from exc
        raise


def store_error(exc: psycopg.Error, pool_max: int = 0, pool_timeout: float = 0) -> StoreError:
    """The protocol's error for a psycopg error."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, PoolTimeout):
        return StoreBusy(f"all {pool_max} connections to the database are in use (waited "
                         f"{pool_timeout:g} s); retry shortly")
    if isinstance(exc, pg_errors.QueryCanceled):
        return StoreBusy(f"the database did not answer within its statement_timeout ({text}); "
                         "retry shortly")
    if isinstance(exc, pg_errors.LockNotAvailable | pg_errors.DeadlockDetected
                  | pg_errors.SerializationFailure):
        return StoreBusy(f"the database is busy ({text}); retry shortly")
    if isinstance(exc, pg_errors.DiskFull):
        return StoreFull(f"the database is full: {text}")
    if isinstance(exc, psycopg.OperationalError):
        return StoreUnavailable(f"the dispatcher's database cannot be reached ({text}); retry "
                                "shortly")
    return StoreError(f"the database refused it: {type(exc).__name__}: {text}")
