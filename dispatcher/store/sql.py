"""What the SQL stores share: statements written once, run on whichever connection a dialect lends.

A statement is written with ``?`` placeholders and portable SQL (``ON CONFLICT DO NOTHING``,
``COALESCE``, ``EXISTS``); what differs between SQLite and PostgreSQL (column types, sort
expressions, case-insensitive search) is a ``Dialect``. A store subclass supplies ``_read``
and ``_write``, which run a function ``fn(db, ...)`` on one connection (inside one transaction
for ``_write``) off the event loop, and turn its driver's errors into the protocol's own
(``StoreBusy``, ``StoreUnavailable``, ``StoreFull``, ``StoreError``): SQLite on its one
thread, PostgreSQL on a pool of connections.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from ..worker.blobs import is_blob_ref
from .base import BlobSource, StoredBlob, blob_ref
from .blobfiles import BlobFiles

log = logging.getLogger("covalent.dispatcher")

T = TypeVar("T")
P = ParamSpec("P")

INLINE_MAX = 64 * 1024  # larger blobs live in the blob store, where workers can read them
CHUNK = 500  # ids per ``IN (...)``: under SQLite's variable limit, small for PostgreSQL
NODE_COLUMNS = ("node_id, name, kind, status, start_time, end_time, output_ref, error, stdout,"
                " stderr, sub_dispatch_id, preview, output_size, gather, reused_from, attempts,"
                " worker")


class Rows(Protocol):
    """What a statement returns (an ``sqlite3.Cursor``, a ``psycopg.Cursor``)."""

    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Db(Protocol):
    """One connection as the shared SQL sees it: ``?`` placeholders, rows as tuples."""

    def execute(self, sql: str, args: Sequence[Any] = (), /) -> Rows: ...
    def executemany(self, sql: str, rows: Iterable[Sequence[Any]], /) -> Any: ...


@dataclass(frozen=True, slots=True)
class Dialect:
    """The SQL that differs between the databases."""

    name: str
    blob: str  # a column of bytes
    bigint: str  # sizes in bytes (outputs over 2 GiB)
    table_suffix: str  # SQLite's "WITHOUT ROWID" for tables keyed by text
    like: str  # case-insensitive LIKE
    bytewise: str  # what makes a text comparison compare bytes ("" where it does already)
    # ``{}`` (a column) is one of the integers of a JSON array parameter: as a plain ``IN``
    # (subquery), PostgreSQL joined 30,000 of them row by row (44 s); ``= ANY`` probes an index
    ids_in: str
    sorts: dict[str, str] = field(default_factory=dict)  # the listing's sort keys (see listing)


def marks(n: int) -> str:
    """``?,?,?`` for an ``IN`` of ``n`` values.

    >>> marks(3)
    '?,?,?'
    """
    return ",".join("?" * n)


def chunks(values: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    """``values`` in slices of ``size``.

    >>> [list(c) for c in chunks([1, 2, 3], 2)]
    [[1, 2], [3]]
    """
    for i in range(0, len(values), size):
        yield values[i : i + size]


class SqlBase:
    """The execution contract of a SQL store and the blob rows every part of it uses."""

    dialect: Dialect
    duplicate: tuple[type[BaseException], ...] = ()  # the driver's unique-key violation

    def __init__(self, blob_dir: Any, storage_options: dict[str, Any] | None,
                 store_root: str | None) -> None:
        self.blob_dir = blob_dir
        self.storage_options = storage_options or {}  # for outputs stored at a URL
        self.files = BlobFiles(store_root or str(blob_dir), blob_dir, self.storage_options)
        self.blobs = self.files.store  # where workers write: the same content addresses
        # Called with (operation, seconds) after each write transaction (the /metrics latency).
        self.on_write: Callable[[str, float], None] | None = None
        self.closed = False  # closing twice is closing once

    def describe(self) -> str:
        """Which database, for people (no password)."""
        raise NotImplementedError

    def connections(self) -> int:
        """Open database connections."""
        raise NotImplementedError

    async def _read(self, fn: Callable[Concatenate[Db, P], T], *args: P.args,
                    **kwargs: P.kwargs) -> T:
        """``fn(db, ...)`` on a connection, off the loop; reads only."""
        raise NotImplementedError

    async def _snapshot(self, fn: Callable[Concatenate[Db, P], T], *args: P.args,
                        **kwargs: P.kwargs) -> T:
        """``_read`` in one read transaction: every statement sees the same committed state."""
        raise NotImplementedError

    async def _write(self, fn: Callable[Concatenate[Db, P], T], *args: P.args,
                     **kwargs: P.kwargs) -> T:
        """``fn(db, ...)`` in one write transaction, off the loop; committed when it returns."""
        raise NotImplementedError

    async def _timed_write(self, op: str, fn: Callable[Concatenate[Db, P], T], *args: P.args,
                           **kwargs: P.kwargs) -> T:
        """``_write``, its duration reported to ``on_write``."""
        start = time.perf_counter()
        try:
            return await self._write(fn, *args, **kwargs)
        finally:
            if self.on_write is not None:
                self.on_write(op, time.perf_counter() - start)

    def _guard_blobs(self, db: Db, exclusive: bool = False) -> None:
        """Called before a transaction names blobs (shared) or removes unused ones (exclusive):
        no blob is removed while another transaction is naming it (PostgreSQL, where
        transactions run side by side; SQLite's writes are serial already)."""

    # -- blob rows -------------------------------------------------------------------------

    def _put_blobs(self, db: Db, blobs: Iterable[bytes | StoredBlob]) -> list[str]:
        """Store blobs (small ones inline, large ones as files) and their rows; their refs."""
        refs = []
        rows: list[tuple[str, int, bytes | None, str | None]] = []
        for blob in blobs:
            if isinstance(blob, StoredBlob):  # on disk already: moved into place, not read
                if blob.path is not None:
                    self.blobs.adopt(blob.path, blob.ref)
                refs.append(blob.ref)
                rows.append((blob.ref, blob.size, None, self.blobs.location(blob.ref)))
                continue
            ref = blob_ref(blob)
            refs.append(ref)
            if len(blob) <= INLINE_MAX:
                rows.append((ref, len(blob), blob, None))
            else:
                self.blobs.put(blob, ref)
                rows.append((ref, len(blob), None, self.blobs.location(ref)))
        if rows:
            self._guard_blobs(db)
            rows.sort(key=lambda row: row[0])  # in key order, as blob_uses (create_dispatch)
            db.executemany("INSERT INTO blobs(ref, size, data, path) VALUES (?,?,?,?)"
                           " ON CONFLICT DO NOTHING", rows)
        return refs

    async def get_blobs(self, refs: Iterable[str]) -> dict[str, bytes]:
        return await self._read(self._get_blobs, list(refs))

    def _get_blobs(self, db: Db, refs: list[str]) -> dict[str, bytes]:
        wanted = list(dict.fromkeys(r for r in refs if r))
        out: dict[str, bytes] = {}
        for chunk in chunks(wanted):
            for ref, data, path in db.execute(
                    f"SELECT ref, data, path FROM blobs WHERE ref IN ({marks(len(chunk))})",
                    chunk).fetchall():
                out[ref] = bytes(data) if data is not None else self.files.read(ref, path)
        return out

    async def blob_sources(self, refs: Iterable[str]) -> dict[str, BlobSource]:
        return await self._read(self._blob_sources, list(refs))

    def _blob_sources(self, db: Db, refs: list[str]) -> dict[str, BlobSource]:
        wanted = list(dict.fromkeys(r for r in refs if r))
        out: dict[str, BlobSource] = {}
        for chunk in chunks(wanted):
            for ref, size, data, path in db.execute(
                    f"SELECT ref, size, data, path FROM blobs WHERE ref IN ({marks(len(chunk))})",
                    chunk).fetchall():
                if data is None and not is_blob_ref(ref):
                    continue  # an older version stored it from a worker's report: never read
                out[ref] = BlobSource(ref, int(size), bytes(data) if data is not None else None,
                                      None if data is not None else self.files.location(ref, path))
        return out

    def _unused(self, db: Db, refs: Iterable[str]) -> list[tuple[str, str | None]]:
        """(ref, file location) of the blobs among ``refs`` that nothing uses any more: no
        dispatch names them (``blob_uses``) and no node has them as its output."""
        wanted = list(dict.fromkeys(r for r in refs if r))
        out: list[tuple[str, str | None]] = []
        for chunk in chunks(wanted):
            out += [(r, p) for r, p in db.execute(
                f"SELECT ref, path FROM blobs WHERE ref IN ({marks(len(chunk))}) AND NOT EXISTS"
                " (SELECT 1 FROM blob_uses u WHERE u.ref = blobs.ref) AND NOT EXISTS"
                " (SELECT 1 FROM nodes n WHERE n.output_ref = blobs.ref)", chunk)]
        return out

    def _collect(self, db: Db, refs: Iterable[str]) -> int:
        """Delete the blobs among ``refs`` nothing uses: their rows, then their bytes (before
        the commit, under the blob guard, so no writer can name one in between)."""
        self._guard_blobs(db, exclusive=True)
        dead = self._unused(db, refs)
        for chunk in chunks([r for r, _ in dead]):
            db.execute(f"DELETE FROM blobs WHERE ref IN ({marks(len(chunk))})", chunk)
        for ref, path in dead:
            if path is not None:  # bytes outside the database: at its content address
                self.files.unlink(ref, path)
        return len(dead)
