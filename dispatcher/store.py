"""Keep every dispatch, node outcome and blob on disk: SQLite in WAL mode plus a blob directory.

Model: a ``dispatches`` row per dispatch (graph JSON, blob references, status, times, error),
a ``nodes`` row per node (status, times, output reference, stdout, stderr, error), and
content-addressed blobs (sha256): small ones inside SQLite, large ones as files under
``blob_dir`` written to a temporary name and renamed into place before the row that names
them is committed.

Crash guarantee: every write is one transaction; a status the API has reported was read
back from a committed transaction, so after ``kill -9`` it is still there. WAL with
``synchronous=NORMAL`` survives a process crash (not a power cut of the last transaction).

All methods are blocking; the server calls them through ``SqliteStore.run``, which uses a
single thread, so the connection is only ever used by one thread and writes are serialised.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

INLINE_MAX = 256 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dispatches (
    dispatch_id TEXT PRIMARY KEY,
    root_dispatch_id TEXT NOT NULL,
    parent_dispatch_id TEXT,
    parent_node_id INTEGER,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    start_time TEXT,
    end_time TEXT,
    error TEXT,
    graph TEXT NOT NULL,
    blob_refs TEXT NOT NULL,
    inputs_ref TEXT,
    lattice_ref TEXT,
    result_ref TEXT,
    template_ref TEXT,
    meta TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS dispatches_status ON dispatches(status);
CREATE TABLE IF NOT EXISTS nodes (
    dispatch_id TEXT NOT NULL,
    node_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    start_time TEXT,
    end_time TEXT,
    output_ref TEXT,
    error TEXT,
    stdout TEXT,
    stderr TEXT,
    sub_dispatch_id TEXT,
    PRIMARY KEY (dispatch_id, node_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS triggers (
    trigger_id TEXT PRIMARY KEY,
    dispatch_id TEXT NOT NULL,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    pickled BLOB,
    active INTEGER NOT NULL,
    fire_count INTEGER NOT NULL DEFAULT 0,
    reason TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS blobs (
    ref TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    data BLOB,
    path TEXT
) WITHOUT ROWID;
"""

TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "POSTPROCESSING_FAILED")


def blob_ref(data: bytes) -> str:
    """The content address of a blob.

    >>> blob_ref(b"")[:12]
    'e3b0c44298fc'
    """
    return hashlib.sha256(data).hexdigest()


@dataclass(slots=True)
class NodeUpdate:
    """New facts about one node; None fields are left as they are."""

    dispatch_id: str
    node_id: int
    status: str | None = None
    start_time: str | None = None
    end_time: str | None = None
    output: bytes | None = None
    error: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    sub_dispatch_id: str | None = None
    only_if_new: bool = False  # a RUNNING report must not overwrite a later status


@dataclass(slots=True)
class DispatchUpdate:
    """New facts about one dispatch; a terminal status is never overwritten."""

    dispatch_id: str
    status: str | None = None
    start_time: str | None = None
    end_time: str | None = None
    error: str | None = None
    result: bytes | None = None


class SqliteStore:
    """The embedded store. Use ``await store.run(store.method, ...)`` from the event loop."""

    def __init__(self, db_path: Path, blob_dir: Path) -> None:
        self.db_path = db_path
        self.blob_dir = blob_dir
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="covalent-store")
        self._db: sqlite3.Connection | None = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def open(self) -> None:
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        db.executescript(_SCHEMA)
        self._db = db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def shutdown(self) -> None:
        self._pool.submit(self.close).result()
        self._pool.shutdown(wait=True)

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    # -- blobs -----------------------------------------------------------------------------

    def _put_blobs(self, blobs: Iterable[bytes]) -> list[str]:
        refs = []
        rows: list[tuple[str, int, bytes | None, str | None]] = []
        for data in blobs:
            ref = blob_ref(data)
            refs.append(ref)
            if len(data) <= INLINE_MAX:
                rows.append((ref, len(data), data, None))
            else:
                rows.append((ref, len(data), None, self._write_file(ref, data)))
        self.db.executemany("INSERT OR IGNORE INTO blobs(ref, size, data, path) VALUES (?,?,?,?)", rows)
        return refs

    def _write_file(self, ref: str, data: bytes) -> str:
        rel = f"{ref[:2]}/{ref}"
        path = self.blob_dir / rel
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        return rel

    def get_blobs(self, refs: Iterable[str]) -> dict[str, bytes]:
        wanted = list(dict.fromkeys(r for r in refs if r))
        out: dict[str, bytes] = {}
        for i in range(0, len(wanted), 500):
            chunk = wanted[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for ref, data, path in self.db.execute(
                f"SELECT ref, data, path FROM blobs WHERE ref IN ({marks})", chunk
            ):
                if data is None:
                    data = (self.blob_dir / path).read_bytes()
                out[ref] = bytes(data)
        return out

    # -- dispatches ------------------------------------------------------------------------

    def create_dispatch(self, record: dict[str, Any], nodes: list[tuple[int, str, str]],
                        blobs: list[bytes], extra: dict[str, bytes]) -> list[str]:
        """Insert a dispatch, its nodes (all NEW_OBJECT) and its blobs in one transaction.

        ``extra`` maps the record's ``*_ref`` columns to blobs stored alongside. Returns the
        refs of ``blobs`` in order. Raises sqlite3.IntegrityError if the id exists.
        """
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            refs = self._put_blobs(blobs)
            row = dict(record, blob_refs=json.dumps(refs))
            for column, data in extra.items():
                row[column] = self._put_blobs([data])[0]
            cols = ",".join(row)
            db.execute(f"INSERT INTO dispatches({cols}) VALUES ({','.join('?' * len(row))})",
                       list(row.values()))
            db.executemany(
                "INSERT INTO nodes(dispatch_id, node_id, name, kind, status) VALUES (?,?,?,?, 'NEW_OBJECT')",
                [(record["dispatch_id"], nid, name, kind) for nid, name, kind in nodes],
            )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # SQLite already rolled back after an I/O error
                db.execute("ROLLBACK")
            raise
        return refs

    def get_dispatch(self, dispatch_id: str) -> dict[str, Any] | None:
        cur = self.db.execute("SELECT * FROM dispatches WHERE dispatch_id = ?", (dispatch_id,))
        row = cur.fetchone()
        if row is None:
            return None
        return dict(zip([c[0] for c in cur.description], row, strict=True))

    def get_status(self, dispatch_id: str) -> str | None:
        row = self.db.execute("SELECT status FROM dispatches WHERE dispatch_id = ?",
                              (dispatch_id,)).fetchone()
        return None if row is None else str(row[0])

    def get_nodes(self, dispatch_id: str) -> list[dict[str, Any]]:
        cur = self.db.execute(
            "SELECT node_id, name, kind, status, start_time, end_time, output_ref, error, stdout,"
            " stderr, sub_dispatch_id FROM nodes WHERE dispatch_id = ? ORDER BY node_id",
            (dispatch_id,),
        )
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur]

    def list_dispatches(self, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        q = ("SELECT dispatch_id, root_dispatch_id, name, status, created_at, start_time, end_time"
             " FROM dispatches")
        args: list[Any] = []
        if status:
            q += " WHERE status = ?"
            args.append(status)
        q += " ORDER BY created_at DESC LIMIT ?"
        args.append(limit)
        cur = self.db.execute(q, args)
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur]

    def apply(self, nodes: list[NodeUpdate], dispatches: list[DispatchUpdate]) -> None:
        """Write a batch of updates in one transaction; terminal statuses are kept."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            outputs = [u.output for u in nodes if u.output is not None]
            refs = iter(self._put_blobs(outputs))
            for u in nodes:
                ref = next(refs) if u.output is not None else None
                guard = ("status = 'NEW_OBJECT'" if u.only_if_new
                         else "status NOT IN ('COMPLETED','FAILED','CANCELLED')")
                db.execute(
                    "UPDATE nodes SET status = COALESCE(?, status),"
                    " start_time = COALESCE(?, start_time), end_time = COALESCE(?, end_time),"
                    " output_ref = COALESCE(?, output_ref), error = COALESCE(?, error),"
                    " stdout = COALESCE(?, stdout), stderr = COALESCE(?, stderr),"
                    " sub_dispatch_id = COALESCE(?, sub_dispatch_id)"
                    f" WHERE dispatch_id = ? AND node_id = ? AND {guard}",
                    (u.status, u.start_time, u.end_time, ref, u.error, u.stdout, u.stderr,
                     u.sub_dispatch_id, u.dispatch_id, u.node_id),
                )
            for d in dispatches:
                rref = self._put_blobs([d.result])[0] if d.result is not None else None
                db.execute(
                    "UPDATE dispatches SET status = COALESCE(?, status),"
                    " start_time = COALESCE(?, start_time), end_time = COALESCE(?, end_time),"
                    " error = COALESCE(?, error), result_ref = COALESCE(?, result_ref)"
                    " WHERE dispatch_id = ? AND status NOT IN"
                    " ('COMPLETED','FAILED','CANCELLED','POSTPROCESSING_FAILED')",
                    (d.status, d.start_time, d.end_time, d.error, rref, d.dispatch_id),
                )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # SQLite already rolled back after an I/O error
                db.execute("ROLLBACK")
            raise

    def claim_pending(self, dispatch_id: str, start_time: str) -> bool:
        """NEW_OBJECT -> RUNNING, atomically; False if it was not NEW_OBJECT any more."""
        cur = self.db.execute(
            "UPDATE dispatches SET status = 'RUNNING', start_time = ? WHERE dispatch_id = ?"
            " AND status = 'NEW_OBJECT'", (start_time, dispatch_id))
        return cur.rowcount == 1

    def set_sub_dispatch(self, dispatch_id: str, node_id: int, child_id: str) -> None:
        self.db.execute("UPDATE nodes SET sub_dispatch_id = ? WHERE dispatch_id = ? AND node_id = ?",
                        (child_id, dispatch_id, node_id))

    def children(self, dispatch_id: str) -> list[tuple[str, int]]:
        """(child dispatch id, parent node id) of the unfinished sublattice dispatches."""
        rows = self.db.execute(
            "SELECT dispatch_id, parent_node_id FROM dispatches WHERE parent_dispatch_id = ?"
            " AND status NOT IN ('COMPLETED','FAILED','CANCELLED','POSTPROCESSING_FAILED')",
            (dispatch_id,))
        return [(r[0], int(r[1])) for r in rows]

    def add_trigger(self, trigger_id: str, dispatch_id: str, name: str, spec: str,
                    pickled: bytes | None, created_at: str) -> None:
        self.db.execute(
            "INSERT INTO triggers(trigger_id, dispatch_id, name, spec, pickled, active, created_at)"
            " VALUES (?,?,?,?,?,1,?)", (trigger_id, dispatch_id, name, spec, pickled, created_at))

    def save_trigger(self, trigger_id: str, spec: str, active: bool, fire_count: int,
                     reason: str) -> None:
        self.db.execute(
            "UPDATE triggers SET spec = ?, active = ?, fire_count = ?, reason = ? WHERE trigger_id = ?",
            (spec, int(active), fire_count, reason, trigger_id))

    def delete_trigger(self, trigger_id: str) -> None:
        self.db.execute("DELETE FROM triggers WHERE trigger_id = ?", (trigger_id,))

    def all_triggers(self) -> list[dict[str, Any]]:
        cur = self.db.execute("SELECT trigger_id, dispatch_id, name, spec, active, fire_count, reason"
                              " FROM triggers ORDER BY created_at")
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur]

    def active_triggers(self) -> list[tuple[str, str, bytes | None, int]]:
        """(trigger id, spec JSON, pickled custom trigger, fire count) of active triggers."""
        rows = self.db.execute("SELECT trigger_id, spec, pickled, fire_count FROM triggers"
                               " WHERE active = 1 ORDER BY created_at")
        return [(r[0], r[1], r[2], int(r[3])) for r in rows]

    def unfinished(self) -> list[str]:
        """Ids of dispatches that were running when the server stopped."""
        rows = self.db.execute(
            "SELECT dispatch_id FROM dispatches WHERE status NOT IN"
            " ('COMPLETED','FAILED','CANCELLED','POSTPROCESSING_FAILED','NEW_OBJECT')"
            " ORDER BY created_at"
        )
        return [r[0] for r in rows]

    def reset_nodes(self, dispatch_id: str, node_ids: list[int]) -> None:
        """Put nodes that were running back to NEW_OBJECT (they will run again)."""
        self.db.executemany(
            "UPDATE nodes SET status='NEW_OBJECT', start_time=NULL WHERE dispatch_id=? AND node_id=?",
            [(dispatch_id, n) for n in node_ids],
        )

    def purge(self) -> int:
        """Delete every finished dispatch and the blobs nothing references; return the count."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            ids = [r[0] for r in db.execute(
                "SELECT dispatch_id FROM dispatches WHERE status IN"
                " ('COMPLETED','FAILED','CANCELLED','POSTPROCESSING_FAILED')")]
            db.executemany("DELETE FROM nodes WHERE dispatch_id = ?", [(i,) for i in ids])
            db.executemany("DELETE FROM dispatches WHERE dispatch_id = ?", [(i,) for i in ids])
            live: set[str] = set()
            for refs, *others in db.execute(
                "SELECT blob_refs, inputs_ref, lattice_ref, result_ref, template_ref FROM dispatches"
            ):
                live.update(json.loads(refs))
                live.update(o for o in others if o)
            live.update(r[0] for r in db.execute("SELECT output_ref FROM nodes WHERE output_ref IS NOT NULL"))
            dead = [(ref, path) for ref, path in db.execute("SELECT ref, path FROM blobs")
                    if ref not in live]
            db.executemany("DELETE FROM blobs WHERE ref = ?", [(r,) for r, _ in dead])
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # SQLite already rolled back after an I/O error
                db.execute("ROLLBACK")
            raise
        for _, path in dead:
            if path:
                (self.blob_dir / path).unlink(missing_ok=True)
        return len(ids)
