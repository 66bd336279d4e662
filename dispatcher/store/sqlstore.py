"""Keep every dispatch, node outcome and blob: the ``DispatchStore`` in SQL, for both databases.

Model: a ``dispatches`` row per dispatch (blob references, status, times, error) and its graph
JSON in a ``dispatch_graphs`` row (not rewritten with each status update), a ``nodes`` row per
node (status, times, output reference, stdout, stderr, error), and content-addressed blobs
(sha256): small ones inside the database, large ones in the blob store (files under
``blob_dir``, or objects under a ``store_root`` URL: where workers write outputs and read the
values they are handed), written atomically before the row that names them is committed. ``blob_uses`` lists the blobs each dispatch names, so a delete finds unused blobs
by index (``deletion``).

Crash guarantee: every write is one transaction; a status the API has reported was read
back from a committed transaction, so after ``kill -9`` it is still there (SQLite: WAL with
``synchronous=NORMAL`` survives a process crash, not a power cut of the last transaction;
PostgreSQL: its own commit). Status changes are applied only where ``state`` allows them (the
SQL guards come from there), so concurrent writers never move a status backwards.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor
from typing import Any, TypeVar

from covalent.wire import clean_text

from ..state import (DISPATCH_TRANSITIONS, NODE_TRANSITIONS, PENDING, TERMINAL, DispatchUpdate,
                     NodeUpdate, Status, entry_guard, sql_list, transition_guard)
from ..worker.blobs import check_ref
from .base import (DispatchExists, DispatchRecord, DispatchSummary, NewDispatch, NodeRecord,
                   StoredBlob, TriggerRecord)
from . import leases, schema
from .deletion import Deletion
from .leases import FENCE, dispatch_resource, trigger_resource
from .listing import Listing
from .users import Users
from .sql import NODE_COLUMNS, Db, chunks, marks

log = logging.getLogger("covalent.dispatcher")
T = TypeVar("T")

SOME_NODES_MAX = 5000  # asked for more nodes than this, ``get_some_nodes`` reads them all
MANY_ALIKE = 16  # so many updates alike but for their node are written as one statement
Fencing = Callable[[str], "tuple[str, int] | None"]  # resource -> (owner, epoch) held now

_TERMINAL = sql_list(TERMINAL)
# The graph lives in ``dispatch_graphs`` (migration 9); a row written inline before it (tests
# that make rows by hand) is read from ``dispatches.graph``.
_DISPATCH_COLUMNS = ("dispatch_id, root_dispatch_id, parent_dispatch_id, parent_node_id, name,"
                     " status, created_at, start_time, end_time, error, COALESCE((SELECT g.graph"
                     " FROM dispatch_graphs g WHERE g.dispatch_id = dispatches.dispatch_id),"
                     " graph), blob_refs, inputs_ref, lattice_ref, result_ref, template_ref,"
                     " meta, owner")
_TRIGGER_COLUMNS = ("trigger_id, dispatch_id, name, spec, pickled, active, fire_count, reason,"
                    " created_at, owner")
_NODE_UPDATE = (
    "UPDATE nodes SET status = COALESCE(?, status),"
    " start_time = COALESCE(?, start_time), end_time = COALESCE(?, end_time),"
    " output_ref = COALESCE(?, output_ref), error = COALESCE(?, error),"
    " stdout = COALESCE(?, stdout), stderr = COALESCE(?, stderr),"
    " sub_dispatch_id = COALESCE(?, sub_dispatch_id), preview = COALESCE(?, preview),"
    " output_size = COALESCE(?, output_size), gather = COALESCE(?, gather),"
    " reused_from = COALESCE(?, reused_from), attempts = COALESCE(?, attempts),"
    " worker = COALESCE(?, worker)"
    " WHERE dispatch_id = ? AND node_id = ? AND ")


class SqlStore(Listing, Deletion, Users):
    """The ``DispatchStore`` methods, written once; ``sqlite`` and ``postgres`` run them.

    A subclass supplies ``_call`` (a function on its threads, errors translated), ``_open``,
    ``_close``, ``_stored_version`` and ``_executor``.
    """

    _executor: Executor

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Status changes are applied in the order they were handed over, as the state machine
        # decided them (a node's COMPLETED after its dispatch's cancel, never before it). SQLite
        # runs every call on one thread in that order anyway; PostgreSQL runs transactions side
        # by side, so these writes queue here, first come, first served.
        self._in_order = asyncio.Lock()
        # Replicas (issue #26): the tenure this server holds of each resource; its writes for a
        # dispatch or trigger apply only under that tenure (``leases.FENCE``). None: one server.
        self.fencing: Fencing | None = None

    async def _ordered(self, op: str, fn: Callable[..., T], *args: Any) -> T:
        async with self._in_order:
            return await self._timed_write(op, fn, *args)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        raise NotImplementedError

    def _open(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def _stored_version(self) -> int:
        raise NotImplementedError

    async def open(self) -> None:
        await self._call(self._open)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        await self._stop_deleting()
        await self._call(self._close)
        self._executor.shutdown(wait=True)

    async def upgrade_plan(self) -> tuple[int, list[schema.Migration]]:
        """(schema version, migrations ``open`` would apply), read without writing."""
        version = await self._call(self._stored_version)
        schema.check_version(version, self.describe())
        return version, schema.pending(version)

    # -- dispatches ------------------------------------------------------------------------

    async def create_dispatch(self, new: NewDispatch, blobs: Sequence[bytes | StoredBlob],
                              extra: dict[str, bytes | StoredBlob]) -> list[str]:
        return await self._timed_write("create", self._create_dispatch, new, blobs, extra)

    def _create_dispatch(self, db: Db, new: NewDispatch, blobs: Sequence[bytes | StoredBlob],
                         extra: dict[str, bytes | StoredBlob]) -> list[str]:
        refs = self._put_blobs(db, blobs)
        row: dict[str, Any] = {
            "dispatch_id": new.dispatch_id, "root_dispatch_id": new.root_dispatch_id,
            "parent_dispatch_id": new.parent_dispatch_id, "parent_node_id": new.parent_node_id,
            "name": clean_text(new.name, 1000), "status": str(new.status),
            "created_at": new.created_at, "start_time": new.start_time,
            "graph": "", "blob_refs": json.dumps(refs), "meta": json.dumps(new.meta),
            "owner": new.owner,
        }
        for column, data in extra.items():
            row[column] = self._put_blobs(db, [data])[0]
        try:
            added = db.execute(f"INSERT INTO dispatches({','.join(row)}) VALUES"
                               f" ({','.join('?' * len(row))}) ON CONFLICT DO NOTHING",
                               list(row.values())).rowcount
        except self.duplicate:  # the same request, at the same time, on another connection
            added = 0
        if added != 1:  # a retried request: its blob rows go with this transaction
            raise DispatchExists(new.dispatch_id)
        # A row of its own: the dispatch's row is updated as it runs, and SQLite rewrites a
        # whole row at each update (schema migration 9).
        db.execute("INSERT INTO dispatch_graphs(dispatch_id, graph) VALUES (?,?)",
                   (new.dispatch_id, new.graph_json))
        self._insert_nodes(db, [(new.dispatch_id, nid, name, kind, str(PENDING))
                                for nid, name, kind in new.nodes])
        # In key order: 100,000 random hashes inserted as they come cost the index twice as
        # much (a page here, a page there) as the same rows sorted.
        used = sorted({*refs, *(row[c] for c in extra)})
        db.executemany("INSERT INTO blob_uses(ref, dispatch_id) VALUES (?,?) ON CONFLICT DO NOTHING",
                       [(ref, new.dispatch_id) for ref in used])
        return refs

    def _insert_nodes(self, db: Db, rows: list[tuple[str, int, str, str, str]]) -> None:
        """Insert new node rows (PostgreSQL copies them in bulk)."""
        db.executemany("INSERT INTO nodes(dispatch_id, node_id, name, kind, status)"
                       " VALUES (?,?,?,?,?)", rows)

    async def get_dispatch(self, dispatch_id: str) -> DispatchRecord | None:
        return await self._read(self._get_dispatch, dispatch_id)

    def _get_dispatch(self, db: Db, dispatch_id: str) -> DispatchRecord | None:
        row = db.execute(f"SELECT {_DISPATCH_COLUMNS} FROM dispatches WHERE dispatch_id = ?",
                         (dispatch_id,)).fetchone()
        if row is None:
            return None
        (did, root, parent, parent_node, name, status, created, start, end, error, graph, refs,
         inputs, lattice, result, template, meta, owner) = row
        return DispatchRecord(did, root, parent, parent_node, name, Status(status), created, start,
                              end, error, graph, json.loads(refs), inputs, lattice, result, template,
                              json.loads(meta), owner)

    async def get_status(self, dispatch_id: str) -> Status | None:
        return await self._read(self._get_status, dispatch_id)

    def _get_status(self, db: Db, dispatch_id: str) -> Status | None:
        row = db.execute("SELECT status FROM dispatches WHERE dispatch_id = ?",
                         (dispatch_id,)).fetchone()
        return None if row is None else Status(row[0])

    async def get_nodes(self, dispatch_id: str) -> list[NodeRecord]:
        return await self._read(self._get_nodes, dispatch_id)

    def _get_nodes(self, db: Db, dispatch_id: str) -> list[NodeRecord]:
        cur = db.execute(f"SELECT {NODE_COLUMNS} FROM nodes WHERE dispatch_id = ?"
                         " ORDER BY node_id", (dispatch_id,)).fetchall()  # rows made in C
        return [NodeRecord(n, name, kind, Status(status), *rest)
                for n, name, kind, status, *rest in cur]

    async def get_some_nodes(self, dispatch_id: str, node_ids: Iterable[int]
                             ) -> dict[int, NodeRecord]:
        return await self._read(self._get_some_nodes, dispatch_id, sorted(set(node_ids)))

    def _get_some_nodes(self, db: Db, dispatch_id: str, node_ids: list[int]
                        ) -> dict[int, NodeRecord]:
        if len(node_ids) > SOME_NODES_MAX:  # much of a large dispatch: one pass over it all
            wanted = set(node_ids)
            return {r.node_id: r for r in self._get_nodes(db, dispatch_id) if r.node_id in wanted}
        found: dict[int, NodeRecord] = {}
        for part in chunks(node_ids):
            rows = db.execute(f"SELECT {NODE_COLUMNS} FROM nodes WHERE dispatch_id = ? AND"
                              f" node_id IN ({marks(len(part))}) ORDER BY node_id",  # in id order, as
                              (dispatch_id, *part)).fetchall()  # PostgreSQL need not give it
            found.update((n, NodeRecord(n, name, kind, Status(status), *rest))
                         for n, name, kind, status, *rest in rows)
        return found

    async def list_dispatches(self, status: str | None = None, limit: int = 100,
                              owner: str | None = None) -> list[DispatchSummary]:
        return await self._read(self._list_dispatches, status, limit, owner)

    def _list_dispatches(self, db: Db, status: str | None, limit: int, owner: str | None
                         ) -> list[DispatchSummary]:
        q = ("SELECT dispatch_id, root_dispatch_id, name, status, created_at, start_time, end_time,"
             " owner FROM dispatches WHERE 1 = 1")
        args: list[Any] = []
        if status:
            q += " AND status = ?"
            args.append(status)
        if owner is not None:
            q += " AND owner = ?"
            args.append(owner)
        q += " ORDER BY created_at DESC LIMIT ?"
        args.append(limit)
        return [DispatchSummary(d, r, n, Status(s), c, st, e, o)
                for d, r, n, s, c, st, e, o in db.execute(q, args)]

    # -- outcomes --------------------------------------------------------------------------

    async def apply(self, nodes: list[NodeUpdate], dispatches: list[DispatchUpdate]) -> None:
        # Outputs the workers stored themselves are known by address only, and the place of
        # each is derived from its address here: a worker's report names no path (issue #21).
        # An address that is not one refuses the batch (BadBlobRef: the recorder then fails
        # that node), before anything is written.
        fences: dict[str, tuple[str, int]] | None = None
        if self.fencing is not None:  # what this replica no longer holds, it does not write
            held = {d: self.fencing(dispatch_resource(d)) for d in
                    {u.dispatch_id for u in nodes} | {u.dispatch_id for u in dispatches}}
            fences = {d: f for d, f in held.items() if f is not None}
            if len(fences) < len(held):  # the next owner reads them from the scheduler's log
                log.info("not written: the updates of dispatches %s (no lease held here)",
                         ", ".join(sorted(set(held) - set(fences))[:10]))
        while True:
            if fences is not None:
                nodes = [u for u in nodes if u.dispatch_id in fences]
                dispatches = [u for u in dispatches if u.dispatch_id in fences]
                if not nodes and not dispatches:
                    return
            stored = [(check_ref(u.output_ref), u.output_size or 0) for u in nodes
                      if u.output_ref is not None and u.output is None]
            try:
                await self._ordered("apply", self._apply, nodes, dispatches, stored, fences)
                return
            except _TenureLost as lost:  # rolled back: the rest is written without them
                assert fences is not None
                log.info("not written: the updates of dispatches %s (their leases were taken "
                         "during the write)", ", ".join(sorted(lost.dispatch_ids)[:10]))
                fences = {d: f for d, f in fences.items() if d not in lost.dispatch_ids}

    def _apply(self, db: Db, nodes: list[NodeUpdate], dispatches: list[DispatchUpdate],
               stored: list[tuple[str, int]],
               fences: dict[str, tuple[str, int]] | None = None) -> None:
        fence = f" AND {FENCE}" if fences is not None else ""
        outputs = [u.output for u in nodes if u.output is not None]
        refs = iter(self._put_blobs(db, outputs))
        if stored:
            self._guard_blobs(db)
            db.executemany("INSERT INTO blobs(ref, size, data, path) VALUES (?,?,NULL,?)"
                           " ON CONFLICT DO NOTHING",
                           [(ref, size, self.blobs.location(ref)) for ref, size in stored])
        # In their order (a node's RUNNING comes before its COMPLETED): one statement per run
        # of updates with the same guard, and one for a run of updates alike but for their
        # node (a cancel's, 100,000 at once), which names its nodes as a JSON list: 0.18 s
        # for 100,000 cancelled nodes against 0.8 s a row each (and 1.9 s in a busy server).
        guard, run = "", list[tuple[Any, ...]]()
        for status, values, dispatch_id, ids in _alike(nodes, refs):
            if len(ids) < MANY_ALIKE:
                sql = _node_update(status) + fence
                if sql != guard and run:
                    db.executemany(guard, run)
                    run = []
                guard = sql
                run.extend((*values, dispatch_id, i, *_fence_args(fences, dispatch_id))
                           for i in ids)
                continue
            if run:
                db.executemany(guard, run)
                guard, run = "", []
            db.execute(_node_update(status, self.dialect.ids_in) + fence,
                       (*values, dispatch_id, json.dumps(ids), *_fence_args(fences, dispatch_id)))
        if run:
            db.executemany(guard, run)
        for d in dispatches:
            rref = self._put_blobs(db, [d.result])[0] if d.result is not None else None
            db.execute(
                "UPDATE dispatches SET status = COALESCE(?, status),"
                " start_time = COALESCE(start_time, ?), end_time = COALESCE(?, end_time),"
                " error = COALESCE(?, error), result_ref = COALESCE(?, result_ref)"
                f" WHERE dispatch_id = ? AND {_dispatch_guard(d.status)}{fence}",
                (_text(d.status), d.start_time, d.end_time, _clean(d.error), rref, d.dispatch_id,
                 *_fence_args(fences, d.dispatch_id)))
            if fences is not None and d.status in TERMINAL:  # replicas waiting for it (at commit)
                db.execute("SELECT pg_notify('covalent', ?)", (f"ended {d.dispatch_id}",))
            if rref is not None:
                db.execute("INSERT INTO blob_uses(ref, dispatch_id) VALUES (?,?)"
                           " ON CONFLICT DO NOTHING", (rref, d.dispatch_id))
        if fences:  # at the commit, every statement under its tenure, or none (leases.hold)
            held = leases.hold(db, {dispatch_resource(d): f for d, f in fences.items()})
            lost = {d for d in fences if dispatch_resource(d) not in held}
            if lost:
                raise _TenureLost(lost)

    async def claim_pending(self, dispatch_id: str, start_time: str) -> bool:
        """NEW_OBJECT -> RUNNING atomically; False if it was not pending any more."""
        return await self._ordered("claim", self._claim_pending, dispatch_id, start_time)

    def _claim_pending(self, db: Db, dispatch_id: str, start_time: str) -> bool:
        guard = transition_guard(PENDING, Status.RUNNING, DISPATCH_TRANSITIONS)
        cur = db.execute(
            f"UPDATE dispatches SET status = '{Status.RUNNING}', start_time = ?"
            f" WHERE dispatch_id = ? AND {guard}", (start_time, dispatch_id))
        return cur.rowcount == 1

    async def set_sub_dispatch(self, dispatch_id: str, node_id: int, child_id: str) -> None:
        await self._ordered("apply", _execute, "UPDATE nodes SET sub_dispatch_id = ? WHERE"
                            " dispatch_id = ? AND node_id = ?", (child_id, dispatch_id, node_id))

    async def children(self, dispatch_id: str) -> list[tuple[str, int]]:
        """(child dispatch id, parent node id) of the unfinished sublattice dispatches."""
        rows = await self._read(_fetch, "SELECT dispatch_id, parent_node_id FROM dispatches WHERE"
                                f" parent_dispatch_id = ? AND status NOT IN {_TERMINAL}",
                                (dispatch_id,))
        return [(r[0], int(r[1])) for r in rows]

    async def unfinished(self) -> list[str]:
        """Ids of dispatches that were running when the server stopped, oldest first."""
        rows = await self._read(_fetch, "SELECT dispatch_id FROM dispatches WHERE status NOT IN"
                                f" {sql_list(TERMINAL | {PENDING})} ORDER BY created_at", ())
        return [r[0] for r in rows]

    async def reset_nodes(self, dispatch_id: str, node_ids: list[int]) -> None:
        """Put nodes that were running back to NEW_OBJECT (they will run again)."""
        guard = transition_guard(Status.RUNNING, PENDING, NODE_TRANSITIONS)
        await self._ordered("reset", _execute_many, f"UPDATE nodes SET status='{PENDING}',"
                            " start_time=NULL, worker=NULL WHERE dispatch_id=? AND node_id=?"
                            f" AND {guard}", [(dispatch_id, n) for n in node_ids])

    async def finished_before(self, before: str | None, statuses: list[Status] | None,
                              owner: str | None = None) -> list[str]:
        """Ids of top-level dispatches that ended (before ``before``, with one of ``statuses``;
        of ``owner`` only, if given), but not one an active trigger dispatches again (a weekly
        purge would stop a trigger registered long ago)."""
        wanted = [s for s in (statuses or TERMINAL) if s in TERMINAL]
        q = (f"SELECT dispatch_id FROM dispatches WHERE status IN {sql_list(wanted)}"
             " AND parent_dispatch_id IS NULL AND dispatch_id NOT IN"
             " (SELECT dispatch_id FROM triggers WHERE active = 1)")
        args: list[Any] = []
        if owner is not None:
            q += " AND owner = ?"
            args.append(owner)
        if before is not None:
            q += " AND COALESCE(end_time, created_at) < ?"
            args.append(before)
        return [r[0] for r in await self._read(_fetch, q + " ORDER BY created_at", args)]

    # -- triggers --------------------------------------------------------------------------

    async def add_trigger(self, record: TriggerRecord) -> None:
        await self._write(_execute, f"INSERT INTO triggers({_TRIGGER_COLUMNS}) VALUES"
                          " (?,?,?,?,?,?,?,?,?,?)",
                          (record.trigger_id, record.dispatch_id, record.name, record.spec_json,
                           record.pickled, int(record.active), record.fire_count, record.reason,
                           record.created_at, record.owner))

    async def save_trigger(self, trigger_id: str, spec_json: str, active: bool, fire_count: int,
                           reason: str) -> None:
        sql = ("UPDATE triggers SET spec = ?, active = ?, fire_count = ?, reason = ?"
               " WHERE trigger_id = ?")
        args: list[Any] = [spec_json, int(active), fire_count, clean_text(reason), trigger_id]
        if self.fencing is not None:  # only the replica observing it
            held = self.fencing(trigger_resource(trigger_id))
            if held is None:
                return
            sql, args = f"{sql} AND {FENCE}", [*args, trigger_resource(trigger_id), *held]
        await self._write(_execute, sql, args)

    async def delete_trigger(self, trigger_id: str) -> None:
        await self._write(_execute, "DELETE FROM triggers WHERE trigger_id = ?", (trigger_id,))

    async def all_triggers(self) -> list[TriggerRecord]:
        return await self._triggers("")

    async def active_triggers(self) -> list[TriggerRecord]:
        return await self._triggers(" WHERE active = 1")

    async def _triggers(self, where: str) -> list[TriggerRecord]:
        rows = await self._read(_fetch, f"SELECT {_TRIGGER_COLUMNS} FROM triggers{where}"
                                " ORDER BY created_at", ())
        return [TriggerRecord(t, d, n, s, bytes(p) if p is not None else None, bool(a), int(f),
                              r or "", c, o) for t, d, n, s, p, a, f, r, c, o in rows]


class _TenureLost(Exception):
    """A fenced batch rolled back: these dispatches' leases were taken while it was written."""

    def __init__(self, dispatch_ids: set[str]) -> None:
        super().__init__(dispatch_ids)
        self.dispatch_ids = dispatch_ids


def _fence_args(fences: dict[str, tuple[str, int]] | None, dispatch_id: str) -> tuple[Any, ...]:
    if fences is None:
        return ()
    return (dispatch_resource(dispatch_id), *fences[dispatch_id])


def _execute(db: Db, sql: str, args: Sequence[Any]) -> None:
    db.execute(sql, args)


def _execute_many(db: Db, sql: str, rows: list[tuple[Any, ...]]) -> None:
    if rows:
        db.executemany(sql, rows)


def _fetch(db: Db, sql: str, args: Sequence[Any]) -> list[Any]:
    return db.execute(sql, args).fetchall()


@functools.cache  # a handful of statuses; 100,000 updates in a batch build it once
def _node_update(target: Status | None, ids_in: str = "") -> str:
    """The update of one node (``ids_in``: of the nodes a JSON list names) into ``target``."""
    sql = _NODE_UPDATE if not ids_in else _NODE_UPDATE.replace(
        "node_id = ?", ids_in.format("node_id"))
    if target is None:
        return sql + f"status NOT IN {_TERMINAL}"
    return sql + entry_guard(target, NODE_TRANSITIONS)


def _alike(nodes: list[NodeUpdate], refs: Iterator[str]
           ) -> Iterator[tuple[Status | None, tuple[Any, ...], str, list[int]]]:
    """The updates in order, each run of updates alike but for their node as one: (status,
    the values set, dispatch id, node ids)."""
    last: tuple[Any, ...] | None = None
    ids: list[int] = []
    for u in nodes:
        ref = next(refs) if u.output is not None else u.output_ref
        size = len(u.output) if u.output is not None else u.output_size
        values = (_text(u.status), u.start_time, u.end_time, ref, _clean(u.error),
                  _clean(u.stdout), _clean(u.stderr), u.sub_dispatch_id, _clean(u.preview),
                  size, u.gather, u.reused_from, u.attempts, u.worker)
        key = (u.status, values, u.dispatch_id)
        if key != last:
            if last is not None:
                yield (*last, ids)
            last, ids = key, []
        ids.append(u.node_id)
    if last is not None:
        yield (*last, ids)


@functools.cache
def _dispatch_guard(target: Status | None) -> str:
    if target is None:
        return f"status NOT IN {_TERMINAL}"
    return entry_guard(target, DISPATCH_TRANSITIONS)


def _text(status: Status | None) -> str | None:
    return None if status is None else str(status)


def _clean(text: str | None) -> str | None:
    """What user code printed or raised, as either database can always store it (issue #11)."""
    return None if text is None else clean_text(text)
