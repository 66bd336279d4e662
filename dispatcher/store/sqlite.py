"""Keep every dispatch, node outcome and blob on disk: SQLite in WAL mode plus a blob directory.

Model: a ``dispatches`` row per dispatch (graph JSON, blob references, status, times, error),
a ``nodes`` row per node (status, times, output reference, stdout, stderr, error), and
content-addressed blobs (sha256): small ones inside SQLite, large ones in the blob store
(files under ``blob_dir``, or objects under a ``store_root`` URL: where workers write outputs
and read the values they are handed), written atomically before the row that names them is
committed.

Crash guarantee: every write is one transaction; a status the API has reported was read
back from a committed transaction, so after ``kill -9`` it is still there. WAL with
``synchronous=NORMAL`` survives a process crash (not a power cut of the last transaction).
Status changes are applied only where ``state`` allows them (the SQL guards come from there).

The public methods are async; each runs its SQL on the store's single thread, so the
connection is only ever used by one thread and writes are serialised.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from covalent.wire import clean_text

from ..state import (DISPATCH_TRANSITIONS, NODE_TRANSITIONS, PENDING, TERMINAL, DispatchUpdate,
                     NodeUpdate, Status, entry_guard, sql_list, transition_guard)
from ..worker.blobs import BlobStore, is_url, open_location
from ..worker.blobs import (BadBlobRef, DamagedBlob, check_ref, checked, is_blob_ref, relative,
                            remove_location)
from .base import (USER_KINDS, BlobSource, DispatchExists, DispatchPage, DispatchQuery,
                   DispatchRecord, DispatchSummary, NewDispatch, NodeRecord, NodeRow, StoredBlob,
                   TriggerRecord, blob_ref)

T = TypeVar("T")

INLINE_MAX = 64 * 1024  # larger blobs live in the blob store, where workers can read them

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
CREATE INDEX IF NOT EXISTS dispatches_parent ON dispatches(parent_dispatch_id);
CREATE INDEX IF NOT EXISTS dispatches_listing ON dispatches(parent_dispatch_id, created_at);
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
    preview TEXT,
    output_size INTEGER,
    gather TEXT,
    reused_from TEXT,
    attempts INTEGER,
    worker TEXT,
    PRIMARY KEY (dispatch_id, node_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS nodes_output ON nodes(output_ref);
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

_TERMINAL = sql_list(TERMINAL)
_DISPATCH_COLUMNS = ("dispatch_id, root_dispatch_id, parent_dispatch_id, parent_node_id, name,"
                     " status, created_at, start_time, end_time, error, graph, blob_refs,"
                     " inputs_ref, lattice_ref, result_ref, template_ref, meta")
_NODE_COLUMNS = ("node_id, name, kind, status, start_time, end_time, output_ref, error, stdout,"
                 " stderr, sub_dispatch_id, preview, output_size, gather, reused_from, attempts,"
                 " worker")
# Columns added after the first release: (table, column, type), added to older stores on open.
_ADDED_COLUMNS = [("nodes", "preview", "TEXT"), ("nodes", "output_size", "INTEGER"),
                  ("nodes", "gather", "TEXT"), ("nodes", "reused_from", "TEXT"),
                  ("nodes", "attempts", "INTEGER"), ("nodes", "worker", "TEXT")]
_TRIGGER_COLUMNS = "trigger_id, dispatch_id, name, spec, pickled, active, fire_count, reason, created_at"


class SqliteStore:
    """The embedded store: a ``DispatchStore`` on one SQLite file and a blob directory."""

    def __init__(self, db_path: Path, blob_dir: Path,
                 storage_options: dict[str, Any] | None = None, store_root: str | None = None
                 ) -> None:
        self.db_path = db_path
        self.blob_dir = blob_dir
        self.storage_options = storage_options or {}  # for outputs stored at a URL
        self.blobs = BlobStore(store_root or str(blob_dir), self.storage_options)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="covalent-store")
        self._db: sqlite3.Connection | None = None

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def open(self) -> None:
        await self._call(self._open)

    async def close(self) -> None:
        await self._call(self._close)
        self._pool.shutdown(wait=True)

    def _open(self) -> None:
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        db.executescript(_SCHEMA)
        for table, column, kind in _ADDED_COLUMNS:
            present = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
            if column not in present:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        self._db = db

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    def _transaction(self, body: Callable[[sqlite3.Connection], T]) -> T:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            out = body(db)
            db.execute("COMMIT")
            return out
        except BaseException:
            if db.in_transaction:  # SQLite already rolled back after an I/O error
                db.execute("ROLLBACK")
            raise

    # -- blobs -----------------------------------------------------------------------------

    def _put_blobs(self, blobs: Iterable[bytes | StoredBlob]) -> list[str]:
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
        self.db.executemany("INSERT OR IGNORE INTO blobs(ref, size, data, path) VALUES (?,?,?,?)", rows)
        return refs

    async def get_blobs(self, refs: Iterable[str]) -> dict[str, bytes]:
        return await self._call(self._get_blobs, list(refs))

    def _get_blobs(self, refs: list[str]) -> dict[str, bytes]:
        wanted = list(dict.fromkeys(r for r in refs if r))
        out: dict[str, bytes] = {}
        for i in range(0, len(wanted), 500):
            chunk = wanted[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for ref, data, path in self.db.execute(
                f"SELECT ref, data, path FROM blobs WHERE ref IN ({marks})", chunk
            ):
                out[ref] = bytes(data) if data is not None else self._read_file(ref, path)
        return out

    def _location(self, ref: str, recorded: str | None) -> str:
        """Where blob ``ref`` is, derived from its address alone, under this store's own root:
        the path recorded with it only tells whether it went to the ``--store-url`` root or to
        the local blob dir (issue #21: a recorded path is never opened as it is)."""
        if recorded is not None and is_url(recorded) and not self.blobs.local:
            return self.blobs.location(ref)
        return relative(ref)

    def _read_file(self, ref: str, recorded: str | None) -> bytes:
        """A blob file's bytes, checked against its address; a damaged one is removed (the
        next write of that value puts it back) and raises DamagedBlob."""
        try:
            location = self._location(ref, recorded)
        except BadBlobRef:  # a row an older version stored from a worker's report
            raise DamagedBlob(ref, "has no valid address") from None
        try:
            with open_location(location, str(self.blob_dir), self.storage_options) as fh:
                data = fh.read()
        except FileNotFoundError:
            raise DamagedBlob(ref, "is missing") from None
        return checked(ref, data, lambda: self._unlink(location))

    async def blob_sources(self, refs: Iterable[str]) -> dict[str, BlobSource]:
        return await self._call(self._blob_sources, list(refs))

    def _blob_sources(self, refs: list[str]) -> dict[str, BlobSource]:
        wanted = list(dict.fromkeys(r for r in refs if r))
        out: dict[str, BlobSource] = {}
        for i in range(0, len(wanted), 500):
            chunk = wanted[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for ref, size, data, path in self.db.execute(
                    f"SELECT ref, size, data, path FROM blobs WHERE ref IN ({marks})", chunk):
                if data is None and not is_blob_ref(ref):
                    continue  # an older version stored it from a worker's report: never read
                out[ref] = BlobSource(ref, int(size), bytes(data) if data is not None else None,
                                      None if data is not None else self._location(ref, path))
        return out

    # -- dispatches ------------------------------------------------------------------------

    async def create_dispatch(self, new: NewDispatch, blobs: Sequence[bytes | StoredBlob],
                              extra: dict[str, bytes | StoredBlob]) -> list[str]:
        return await self._call(self._create_dispatch, new, blobs, extra)

    def _create_dispatch(self, new: NewDispatch, blobs: Sequence[bytes | StoredBlob],
                         extra: dict[str, bytes | StoredBlob]) -> list[str]:
        def body(db: sqlite3.Connection) -> list[str]:
            refs = self._put_blobs(blobs)
            row: dict[str, Any] = {
                "dispatch_id": new.dispatch_id, "root_dispatch_id": new.root_dispatch_id,
                "parent_dispatch_id": new.parent_dispatch_id, "parent_node_id": new.parent_node_id,
                "name": clean_text(new.name, 1000), "status": str(new.status),
                "created_at": new.created_at, "start_time": new.start_time,
                "graph": new.graph_json, "blob_refs": json.dumps(refs), "meta": json.dumps(new.meta),
            }
            for column, data in extra.items():
                row[column] = self._put_blobs([data])[0]
            db.execute(f"INSERT INTO dispatches({','.join(row)}) VALUES ({','.join('?' * len(row))})",
                       list(row.values()))
            db.executemany(
                f"INSERT INTO nodes(dispatch_id, node_id, name, kind, status) VALUES (?,?,?,?,'{PENDING}')",
                [(new.dispatch_id, nid, name, kind) for nid, name, kind in new.nodes])
            return refs

        try:
            return self._transaction(body)
        except sqlite3.IntegrityError:
            raise DispatchExists(new.dispatch_id) from None

    async def get_dispatch(self, dispatch_id: str) -> DispatchRecord | None:
        return await self._call(self._get_dispatch, dispatch_id)

    def _get_dispatch(self, dispatch_id: str) -> DispatchRecord | None:
        row = self.db.execute(f"SELECT {_DISPATCH_COLUMNS} FROM dispatches WHERE dispatch_id = ?",
                              (dispatch_id,)).fetchone()
        if row is None:
            return None
        (did, root, parent, parent_node, name, status, created, start, end, error, graph, refs,
         inputs, lattice, result, template, meta) = row
        return DispatchRecord(did, root, parent, parent_node, name, Status(status), created, start,
                              end, error, graph, json.loads(refs), inputs, lattice, result, template,
                              json.loads(meta))

    async def get_status(self, dispatch_id: str) -> Status | None:
        return await self._call(self._get_status, dispatch_id)

    def _get_status(self, dispatch_id: str) -> Status | None:
        row = self.db.execute("SELECT status FROM dispatches WHERE dispatch_id = ?",
                              (dispatch_id,)).fetchone()
        return None if row is None else Status(row[0])

    async def get_nodes(self, dispatch_id: str) -> list[NodeRecord]:
        return await self._call(self._get_nodes, dispatch_id)

    def _get_nodes(self, dispatch_id: str) -> list[NodeRecord]:
        cur = self.db.execute(f"SELECT {_NODE_COLUMNS} FROM nodes WHERE dispatch_id = ?"
                              " ORDER BY node_id", (dispatch_id,))
        return [NodeRecord(n, name, kind, Status(status), *rest)
                for n, name, kind, status, *rest in cur]

    async def list_dispatches(self, status: str | None = None, limit: int = 100) -> list[DispatchSummary]:
        return await self._call(self._list_dispatches, status, limit)

    def _list_dispatches(self, status: str | None, limit: int) -> list[DispatchSummary]:
        q = ("SELECT dispatch_id, root_dispatch_id, name, status, created_at, start_time, end_time"
             " FROM dispatches")
        args: list[Any] = []
        if status:
            q += " WHERE status = ?"
            args.append(status)
        q += " ORDER BY created_at DESC LIMIT ?"
        args.append(limit)
        return [DispatchSummary(d, r, n, Status(s), c, st, e)
                for d, r, n, s, c, st, e in self.db.execute(q, args)]

    async def apply(self, nodes: list[NodeUpdate], dispatches: list[DispatchUpdate]) -> None:
        await self._call(self._apply, nodes, dispatches)

    def _apply(self, nodes: list[NodeUpdate], dispatches: list[DispatchUpdate]) -> None:
        # Outputs the workers stored themselves are known by address only, and the place of
        # each is derived from its address here: a worker's report names no path (issue #21).
        # An address that is not one refuses the batch (the recorder then fails that node).
        stored = [(check_ref(u.output_ref), u.output_size or 0) for u in nodes
                  if u.output_ref is not None and u.output is None]

        def body(db: sqlite3.Connection) -> None:
            outputs = [u.output for u in nodes if u.output is not None]
            refs = iter(self._put_blobs(outputs))
            db.executemany("INSERT OR IGNORE INTO blobs(ref, size, data, path) VALUES (?,?,NULL,?)",
                           [(ref, size, self.blobs.location(ref)) for ref, size in stored])
            for u in nodes:
                ref = next(refs) if u.output is not None else u.output_ref
                size = len(u.output) if u.output is not None else u.output_size
                db.execute(
                    "UPDATE nodes SET status = COALESCE(?, status),"
                    " start_time = COALESCE(?, start_time), end_time = COALESCE(?, end_time),"
                    " output_ref = COALESCE(?, output_ref), error = COALESCE(?, error),"
                    " stdout = COALESCE(?, stdout), stderr = COALESCE(?, stderr),"
                    " sub_dispatch_id = COALESCE(?, sub_dispatch_id), preview = COALESCE(?, preview),"
                    " output_size = COALESCE(?, output_size), gather = COALESCE(?, gather),"
                    " reused_from = COALESCE(?, reused_from), attempts = COALESCE(?, attempts),"
                    " worker = COALESCE(?, worker)"
                    f" WHERE dispatch_id = ? AND node_id = ? AND {_node_guard(u.status)}",
                    (_text(u.status), u.start_time, u.end_time, ref, _clean(u.error),
                     _clean(u.stdout), _clean(u.stderr), u.sub_dispatch_id, _clean(u.preview),
                     size, u.gather, u.reused_from, u.attempts, u.worker, u.dispatch_id, u.node_id))
            for d in dispatches:
                rref = self._put_blobs([d.result])[0] if d.result is not None else None
                db.execute(
                    "UPDATE dispatches SET status = COALESCE(?, status),"
                    " start_time = COALESCE(?, start_time), end_time = COALESCE(?, end_time),"
                    " error = COALESCE(?, error), result_ref = COALESCE(?, result_ref)"
                    f" WHERE dispatch_id = ? AND {_dispatch_guard(d.status)}",
                    (_text(d.status), d.start_time, d.end_time, _clean(d.error), rref, d.dispatch_id))

        self._transaction(body)

    async def claim_pending(self, dispatch_id: str, start_time: str) -> bool:
        return await self._call(self._claim_pending, dispatch_id, start_time)

    def _claim_pending(self, dispatch_id: str, start_time: str) -> bool:
        guard = transition_guard(PENDING, Status.RUNNING, DISPATCH_TRANSITIONS)
        cur = self.db.execute(
            f"UPDATE dispatches SET status = '{Status.RUNNING}', start_time = ?"
            f" WHERE dispatch_id = ? AND {guard}", (start_time, dispatch_id))
        return cur.rowcount == 1

    async def set_sub_dispatch(self, dispatch_id: str, node_id: int, child_id: str) -> None:
        await self._call(self.db.execute, "UPDATE nodes SET sub_dispatch_id = ? WHERE dispatch_id = ?"
                         " AND node_id = ?", (child_id, dispatch_id, node_id))

    async def children(self, dispatch_id: str) -> list[tuple[str, int]]:
        """(child dispatch id, parent node id) of the unfinished sublattice dispatches."""
        return await self._call(self._children, dispatch_id)

    def _children(self, dispatch_id: str) -> list[tuple[str, int]]:
        rows = self.db.execute("SELECT dispatch_id, parent_node_id FROM dispatches WHERE"
                               f" parent_dispatch_id = ? AND status NOT IN {_TERMINAL}", (dispatch_id,))
        return [(r[0], int(r[1])) for r in rows]

    async def unfinished(self) -> list[str]:
        """Ids of dispatches that were running when the server stopped, oldest first."""
        return await self._call(self._unfinished)

    def _unfinished(self) -> list[str]:
        rows = self.db.execute("SELECT dispatch_id FROM dispatches WHERE status NOT IN"
                               f" {sql_list(TERMINAL | {PENDING})} ORDER BY created_at")
        return [r[0] for r in rows]

    async def reset_nodes(self, dispatch_id: str, node_ids: list[int]) -> None:
        """Put nodes that were running back to NEW_OBJECT (they will run again)."""
        guard = transition_guard(Status.RUNNING, PENDING, NODE_TRANSITIONS)
        await self._call(self.db.executemany,
                         f"UPDATE nodes SET status='{PENDING}', start_time=NULL WHERE dispatch_id=?"
                         f" AND node_id=? AND {guard}", [(dispatch_id, n) for n in node_ids])

    async def finished_before(self, before: str | None, statuses: list[Status] | None) -> list[str]:
        """Ids of top-level dispatches that ended (before ``before``, with one of ``statuses``)."""
        return await self._call(self._finished_before, before, statuses)

    def _finished_before(self, before: str | None, statuses: list[Status] | None) -> list[str]:
        wanted = [s for s in (statuses or TERMINAL) if s in TERMINAL]
        q = (f"SELECT dispatch_id FROM dispatches WHERE status IN {sql_list(wanted)}"
             " AND parent_dispatch_id IS NULL")
        args: list[Any] = []
        if before is not None:
            q += " AND COALESCE(end_time, created_at) < ?"
            args.append(before)
        return [r[0] for r in self.db.execute(q + " ORDER BY created_at", args)]

    async def delete_dispatches(self, dispatch_ids: list[str], pending: bool = False) -> list[str]:
        """Delete finished dispatches, their sublattice dispatches, triggers and the blobs no
        other dispatch references; return the ids deleted. Unfinished ones are left alone, and
        never-started (NEW_OBJECT) ones unless ``pending``."""
        return await self._call(self._delete_dispatches, dispatch_ids, pending)

    def _delete_dispatches(self, dispatch_ids: list[str], pending: bool) -> list[str]:
        deletable = sql_list([*TERMINAL, PENDING]) if pending else _TERMINAL

        def body(db: sqlite3.Connection) -> tuple[list[str], list[str]]:
            doomed: list[str] = []
            todo = list(dispatch_ids)
            while todo:  # a dispatch and, below it, its sublattice dispatches
                chunk, todo = todo[:500], todo[500:]
                marks = ",".join("?" * len(chunk))
                rows = db.execute(f"SELECT dispatch_id FROM dispatches WHERE dispatch_id IN ({marks})"
                                  f" AND status IN {deletable}", chunk).fetchall()
                found = [r[0] for r in rows]
                doomed += found
                if found:
                    marks = ",".join("?" * len(found))
                    todo += [r[0] for r in db.execute(
                        f"SELECT dispatch_id FROM dispatches WHERE parent_dispatch_id IN ({marks})", found)]
            candidates: set[str] = set()
            outputs: set[str] = set()
            for i in doomed:
                refs, *others = db.execute("SELECT blob_refs, inputs_ref, lattice_ref, result_ref,"
                                           " template_ref FROM dispatches WHERE dispatch_id = ?",
                                           (i,)).fetchone()
                candidates.update(json.loads(refs), (o for o in others if o))
                outputs.update(r[0] for r in db.execute(
                    "SELECT output_ref FROM nodes WHERE dispatch_id = ? AND output_ref IS NOT NULL", (i,)))
            candidates |= outputs
            for table in ("nodes", "dispatches", "triggers"):
                db.executemany(f"DELETE FROM {table} WHERE dispatch_id = ?", [(i,) for i in doomed])
            dead = [ref for ref in candidates if not self._referenced(db, ref)]
            paths = [self._location(ref, p) for ref in dead if is_blob_ref(ref) for (p,) in db.execute(
                "SELECT path FROM blobs WHERE ref = ? AND path IS NOT NULL", (ref,))]
            db.executemany("DELETE FROM blobs WHERE ref = ?", [(r,) for r in dead])
            return doomed, paths

        doomed, paths = self._transaction(body)
        for path in paths:
            self._unlink(path)
        return doomed

    def _unlink(self, location: str) -> None:
        """Remove a blob's bytes at a location ``_location`` derived (a local file under the
        blob dir, or an object under the store's root URL)."""
        remove_location(location, str(self.blob_dir), self.storage_options)

    @staticmethod
    def _referenced(db: sqlite3.Connection, ref: str) -> bool:
        """Whether any stored dispatch still uses the blob ``ref`` (a shared blob survives)."""
        for column in ("inputs_ref", "lattice_ref", "result_ref", "template_ref"):
            if db.execute(f"SELECT 1 FROM dispatches WHERE {column} = ? LIMIT 1", (ref,)).fetchone():
                return True
        if db.execute("SELECT 1 FROM nodes WHERE output_ref = ? LIMIT 1", (ref,)).fetchone():
            return True
        like = f'%"{ref}"%'  # function and parameter blobs are listed in blob_refs (JSON)
        return db.execute("SELECT 1 FROM dispatches WHERE blob_refs LIKE ? LIMIT 1",
                          (like,)).fetchone() is not None

    # -- triggers --------------------------------------------------------------------------

    async def add_trigger(self, record: TriggerRecord) -> None:
        await self._call(self.db.execute, f"INSERT INTO triggers({_TRIGGER_COLUMNS}) VALUES"
                         " (?,?,?,?,?,?,?,?,?)",
                         (record.trigger_id, record.dispatch_id, record.name, record.spec_json,
                          record.pickled, int(record.active), record.fire_count, record.reason,
                          record.created_at))

    async def save_trigger(self, trigger_id: str, spec_json: str, active: bool, fire_count: int,
                           reason: str) -> None:
        await self._call(self.db.execute, "UPDATE triggers SET spec = ?, active = ?, fire_count = ?,"
                         " reason = ? WHERE trigger_id = ?",
                         (spec_json, int(active), fire_count, reason, trigger_id))

    async def delete_trigger(self, trigger_id: str) -> None:
        await self._call(self.db.execute, "DELETE FROM triggers WHERE trigger_id = ?", (trigger_id,))

    async def all_triggers(self) -> list[TriggerRecord]:
        return await self._call(self._triggers, "")

    async def active_triggers(self) -> list[TriggerRecord]:
        return await self._call(self._triggers, " WHERE active = 1")

    def _triggers(self, where: str) -> list[TriggerRecord]:
        rows = self.db.execute(f"SELECT {_TRIGGER_COLUMNS} FROM triggers{where} ORDER BY created_at")
        return [TriggerRecord(t, d, n, s, p, bool(a), int(f), r or "", c)
                for t, d, n, s, p, a, f, r, c in rows]

    # -- what the web UI and the progress views read (issue #15) ---------------------------

    async def page_dispatches(self, query: DispatchQuery) -> DispatchPage:
        """One page of the listing; the rows, the total and the per-status counts come from
        one read transaction, so they agree."""
        return await self._call(self._page_dispatches, query)

    def _page_dispatches(self, query: DispatchQuery) -> DispatchPage:
        where, args = _listing_filter(query)
        order = _SORTS.get(query.sort, _SORTS["created"]) + (" DESC" if query.descending else " ASC")
        db = self.db
        db.execute("BEGIN")
        try:
            counts = {s: n for s, n in db.execute(
                f"SELECT status, count(*) FROM dispatches{where} GROUP BY status", args)}
            status_where, status_args = where, list(args)
            if query.status:
                status_where += (" AND" if where else " WHERE") + " status = ?"
                status_args.append(query.status)
            total = counts.get(query.status, 0) if query.status else sum(counts.values())
            rows = db.execute(
                "SELECT dispatch_id, root_dispatch_id, name, status, created_at, start_time, end_time"
                f" FROM dispatches{status_where} ORDER BY {order}, created_at DESC, dispatch_id"
                " LIMIT ? OFFSET ?", [*status_args, max(query.limit, 0), max(query.offset, 0)])
            page = [DispatchSummary(d, r, n, Status(st), c, s, e) for d, r, n, st, c, s, e in rows]
        finally:
            db.execute("COMMIT")
        return DispatchPage(page, total, counts)

    async def electron_counts(self, dispatch_ids: list[str]) -> dict[str, dict[Status, int]]:
        return await self._call(self._electron_counts, dispatch_ids)

    def _electron_counts(self, dispatch_ids: list[str]) -> dict[str, dict[Status, int]]:
        out: dict[str, dict[Status, int]] = {i: {} for i in dispatch_ids}
        kinds = ",".join(f"'{k}'" for k in USER_KINDS)  # fixed identifiers, never user text
        for i in range(0, len(dispatch_ids), 500):
            chunk = dispatch_ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for did, status, n in self.db.execute(
                f"SELECT dispatch_id, status, count(*) FROM nodes WHERE dispatch_id IN ({marks})"
                f" AND kind IN ({kinds}) GROUP BY dispatch_id, status", chunk):
                out[did][Status(status)] = n
        return out

    async def find_ids(self, prefix: str, limit: int) -> list[str]:
        # A range on the primary key (an index seek), not LIKE: ids are lower-case hex and "-",
        # all below "~".
        return [r[0] for r in await self._call(lambda: self.db.execute(
            "SELECT dispatch_id FROM dispatches WHERE dispatch_id >= ? AND dispatch_id < ?"
            " ORDER BY created_at DESC LIMIT ?", (prefix, prefix + "~", limit)).fetchall())]

    async def node_rows(self, dispatch_id: str) -> list[NodeRow]:
        return await self._call(self._node_rows, dispatch_id)

    def _node_rows(self, dispatch_id: str) -> list[NodeRow]:
        cur = self.db.execute(
            "SELECT node_id, name, kind, status, start_time, end_time, sub_dispatch_id,"
            " error IS NOT NULL, output_size, worker FROM nodes WHERE dispatch_id = ? ORDER BY node_id",
            (dispatch_id,))
        return [NodeRow(n, name, kind, Status(status), start, end, sub, bool(err), size, worker)
                for n, name, kind, status, start, end, sub, err, size, worker in cur]

    async def get_node(self, dispatch_id: str, node_id: int) -> NodeRecord | None:
        return await self._call(self._get_node, dispatch_id, node_id)

    def _get_node(self, dispatch_id: str, node_id: int) -> NodeRecord | None:
        row = self.db.execute(f"SELECT {_NODE_COLUMNS} FROM nodes WHERE dispatch_id = ? AND"
                              " node_id = ?", (dispatch_id, node_id)).fetchone()
        if row is None:
            return None
        n, name, kind, status, *rest = row
        return NodeRecord(n, name, kind, Status(status), *rest)


@functools.cache  # a handful of statuses; 100,000 updates in a batch build it once
def _node_guard(target: Status | None) -> str:
    if target is None:
        return f"status NOT IN {_TERMINAL}"
    return entry_guard(target, NODE_TRANSITIONS)


@functools.cache
def _dispatch_guard(target: Status | None) -> str:
    if target is None:
        return f"status NOT IN {_TERMINAL}"
    return entry_guard(target, DISPATCH_TRANSITIONS)


def _text(status: Status | None) -> str | None:
    return None if status is None else str(status)


def _clean(text: str | None) -> str | None:
    """What user code printed or raised, as SQLite can always store it (issue #11)."""
    return None if text is None else clean_text(text)


# Sort keys of the listing: fixed SQL expressions chosen by name, never user text.
_SORTS = {
    "created": "created_at",
    "started": "COALESCE(start_time, created_at)",
    "name": "name COLLATE NOCASE",
    "status": "status",
    "runtime": "julianday(COALESCE(end_time, strftime('%Y-%m-%dT%H:%M:%f', 'now')))"
               " - julianday(start_time)",
}


def _listing_filter(query: DispatchQuery) -> tuple[str, list[Any]]:
    """The WHERE clause (top level; search in names and ids) shared by the rows and counts.

    >>> _listing_filter(DispatchQuery(search="a_b"))[1]
    ['%a\\\\_b%', '%a\\\\_b%']
    """
    clauses: list[str] = []
    args: list[Any] = []
    if query.top_level:
        clauses.append("parent_dispatch_id IS NULL")
    text = query.search.strip()
    if text:
        escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        clauses.append("(name LIKE ? ESCAPE '\\' OR dispatch_id LIKE ? ESCAPE '\\')")
        args += [f"%{escaped}%", f"%{escaped.lower()}%"]
    if query.created_after:
        clauses.append("created_at > ?")
        args.append(query.created_after)
    if query.created_before:
        clauses.append("created_at < ?")
        args.append(query.created_before)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args
