"""The schema and how it moves forward: numbered migrations, applied in order at start.

Every database (the SQLite file, a PostgreSQL database) records the migrations applied to it
in ``schema_migrations``. Opening one applies those it lacks, each in a transaction of its own
with its row, so a failure keeps the ones before it and changes nothing of its own. A database
that records a migration this version does not know was written by a newer version: it is
refused before anything is written (``check_version``). A data dir from before schema versions
(commit 27c8847 and the versions after it) has tables but no ``schema_migrations``: version 0,
and the first migrations are written to find what it already has.

Migration 6 (issue #26) adds users and owners (``users``, ``dispatches.owner``,
``triggers.owner``). Migration 7 (issue #26, several dispatchers sharing one PostgreSQL) adds
``leases`` (which replica acts on each running dispatch and active trigger), ``trigger_fires``
(each tick or event a trigger fired, once) and ``cancel_requests`` (a cancel received by a
replica that does not run the dispatch, for the one that does). SQLite gets the tables too
and never uses them (one process owns its file). Migration 8 adds ``cancel_requests.answer``,
the running replica's answer to such a cancel. Migration 9 moves each dispatch's graph to
``dispatch_graphs`` (issue #23: an update of a dispatch's status no longer rewrites its graph).
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from covalent.wire import GATHER_KINDS

from ..errors import StoreVersionError
from .base import BUILTIN_OWNER
from .sql import Db, Dialect, SqlBase, chunks

log = logging.getLogger("covalent.dispatcher")

Apply = Callable[[Db, Dialect, SqlBase], None]


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    summary: str  # what it changes, as ``covalent db upgrade --dry-run`` says it
    apply: Apply


def _v1_tables(db: Db, d: Dialect, store: SqlBase) -> None:
    """The tables as commit 27c8847 wrote them (``IF NOT EXISTS``: a data dir from before
    schema versions has them already)."""
    db.execute(f"""CREATE TABLE IF NOT EXISTS dispatches (
        dispatch_id TEXT PRIMARY KEY, root_dispatch_id TEXT NOT NULL, parent_dispatch_id TEXT,
        parent_node_id INTEGER, name TEXT NOT NULL, status TEXT NOT NULL,
        created_at TEXT NOT NULL, start_time TEXT, end_time TEXT, error TEXT,
        graph TEXT NOT NULL, blob_refs TEXT NOT NULL, inputs_ref TEXT, lattice_ref TEXT,
        result_ref TEXT, template_ref TEXT, meta TEXT NOT NULL DEFAULT '{{}}')""")
    db.execute("CREATE INDEX IF NOT EXISTS dispatches_status ON dispatches(status)")
    db.execute(f"""CREATE TABLE IF NOT EXISTS nodes (
        dispatch_id TEXT NOT NULL, node_id INTEGER NOT NULL, name TEXT NOT NULL,
        kind TEXT NOT NULL, status TEXT NOT NULL, start_time TEXT, end_time TEXT,
        output_ref TEXT, error TEXT, stdout TEXT, stderr TEXT, sub_dispatch_id TEXT,
        PRIMARY KEY (dispatch_id, node_id)){d.table_suffix}""")
    db.execute(f"""CREATE TABLE IF NOT EXISTS triggers (
        trigger_id TEXT PRIMARY KEY, dispatch_id TEXT NOT NULL, name TEXT NOT NULL,
        spec TEXT NOT NULL, pickled {d.blob}, active INTEGER NOT NULL,
        fire_count INTEGER NOT NULL DEFAULT 0, reason TEXT, created_at TEXT NOT NULL)""")
    db.execute(f"""CREATE TABLE IF NOT EXISTS blobs (
        ref TEXT PRIMARY KEY, size {d.bigint} NOT NULL, data {d.blob}, path TEXT){d.table_suffix}""")


def _v2_node_columns(db: Db, d: Dialect, store: SqlBase) -> None:
    """Columns added to nodes since 27c8847 (older stores gained some of them silently on
    open: only those missing are added), and the indexes of the listing and of reuse."""
    present = columns(db, d, "nodes")
    for column, kind in (("preview", "TEXT"), ("output_size", d.bigint), ("gather", "TEXT"),
                         ("reused_from", "TEXT"), ("attempts", "INTEGER")):
        if column not in present:
            db.execute(f"ALTER TABLE nodes ADD COLUMN {column} {kind}")
    db.execute("CREATE INDEX IF NOT EXISTS dispatches_parent ON dispatches(parent_dispatch_id)")
    db.execute("CREATE INDEX IF NOT EXISTS dispatches_listing"
               " ON dispatches(parent_dispatch_id, created_at)")
    db.execute("CREATE INDEX IF NOT EXISTS nodes_output ON nodes(output_ref)")


def _v3_gathers(db: Db, d: Dialect, store: SqlBase) -> None:
    """Gathering nodes (lists, tuples, dicts, the result) stored as pickles that call a
    module of the old SDK (``covalent._assembly``: ModuleNotFoundError on load today) become
    what this version records: the list of their parts, from the dispatch's graph; their old
    pickles are removed once nothing uses them. ``POSTPROCESSING_FAILED`` (terminal then) is
    recorded ``FAILED``. No user value is unpickled."""
    kinds = ",".join(f"'{k}'" for k in sorted(GATHER_KINDS))  # fixed identifiers
    rows = db.execute(f"SELECT dispatch_id, node_id, output_ref FROM nodes WHERE kind IN ({kinds})"
                      " AND gather IS NULL AND output_ref IS NOT NULL AND status = 'COMPLETED'"
                      " ORDER BY dispatch_id, node_id").fetchall()
    by_dispatch: dict[str, list[tuple[int, str]]] = {}
    for dispatch_id, node_id, ref in rows:
        by_dispatch.setdefault(dispatch_id, []).append((int(node_id), ref))
    old: list[str] = []
    for dispatch_id, nodes in by_dispatch.items():
        for node_id, ref, spec in _gather_specs(db, store, dispatch_id, nodes):
            db.execute("UPDATE nodes SET gather = ?, output_ref = NULL, output_size = NULL"
                       " WHERE dispatch_id = ? AND node_id = ?", (spec, dispatch_id, node_id))
            old.append(ref)
    for chunk in chunks(old):
        db.execute(f"UPDATE dispatches SET result_ref = NULL WHERE result_ref IN"
                   f" ({','.join('?' * len(chunk))})", chunk)
    db.execute("UPDATE dispatches SET status = 'FAILED' WHERE status = 'POSTPROCESSING_FAILED'")
    if old:
        log.info("upgrade: %d gathering nodes of %d dispatches recorded as their parts",
                 len(old), len(by_dispatch))
    _forget_unused(db, store, old)


def _gather_specs(db: Db, store: SqlBase, dispatch_id: str, nodes: list[tuple[int, str]]
                  ) -> Iterator[tuple[int, str, str]]:
    """(node id, old output ref, gather JSON) of a dispatch's gathering nodes, as the runner
    records them today: parts and layout from the graph's edges into each node."""
    row = db.execute("SELECT graph, blob_refs FROM dispatches WHERE dispatch_id = ?",
                     (dispatch_id,)).fetchone()
    if row is None:
        return
    try:
        graph, blob_refs = json.loads(row[0]), json.loads(row[1])
        by_id = {int(n["id"]): n for n in graph["nodes"]}
        edges: dict[int, list[list[object]]] = {}
        for e in graph["edges"]:
            edges.setdefault(int(e[1]), []).append(e)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        log.warning("upgrade: dispatch %s: graph unreadable (%s); its gathering nodes stay as "
                    "they were", dispatch_id, exc)
        return
    for node_id, ref in nodes:
        node, into = by_id.get(node_id), edges.get(node_id, [])
        if node is None:
            continue
        spec: dict[str, object] = {"kind": node["kind"], "parts": [int(str(e[0])) for e in into],
                                   "layout": [[e[3], e[2], e[4]] for e in into]}
        if node["kind"] == "dict" and node.get("value") is not None:  # the keys, pickled
            keys = store._get_blobs(db, [blob_refs[int(node["value"])]])
            if not keys:
                log.warning("upgrade: dispatch %s node %d: its keys are not stored; left as it was",
                            dispatch_id, node_id)
                continue
            spec["extra"] = base64.b64encode(next(iter(keys.values()))).decode()
        yield node_id, ref, json.dumps(spec)


def _forget_unused(db: Db, store: SqlBase, refs: list[str]) -> None:
    """Remove the blobs among ``refs`` nothing uses (before ``blob_uses`` exists: uses are
    read from the dispatches' columns and their ``blob_refs``)."""
    used: set[str] = set()
    for refs_json, *others in db.execute("SELECT blob_refs, inputs_ref, lattice_ref, result_ref,"
                                         " template_ref FROM dispatches"):
        used.update(json.loads(refs_json), (o for o in others if o))
    for ref in dict.fromkeys(refs):
        if ref in used or db.execute("SELECT 1 FROM nodes WHERE output_ref = ?",
                                     (ref,)).fetchone():
            continue
        path = db.execute("SELECT path FROM blobs WHERE ref = ?", (ref,)).fetchone()
        db.execute("DELETE FROM blobs WHERE ref = ?", (ref,))
        if path is not None and path[0] is not None:
            store.files.unlink(ref, path[0])


def _v4_blob_uses(db: Db, d: Dialect, store: SqlBase) -> None:
    """``blob_uses``: each blob a dispatch names (functions, parameters, inputs, lattice,
    template), so a delete finds the blobs nothing uses through an index rather than by
    scanning every dispatch (issue #21: 16.7 s for a 1,000-node dispatch); ``deletions``:
    deletes under way, finished at start if the server stopped during one."""
    db.execute(f"""CREATE TABLE IF NOT EXISTS blob_uses (
        ref TEXT NOT NULL, dispatch_id TEXT NOT NULL, PRIMARY KEY (ref, dispatch_id)){d.table_suffix}""")
    db.execute("CREATE INDEX IF NOT EXISTS blob_uses_dispatch ON blob_uses(dispatch_id)")
    db.execute("CREATE TABLE IF NOT EXISTS deletions (dispatch_id TEXT PRIMARY KEY,"
               " queued_at TEXT NOT NULL)")
    rows = db.execute("SELECT dispatch_id, blob_refs, inputs_ref, lattice_ref, result_ref,"
                      " template_ref FROM dispatches").fetchall()
    for dispatch_id, refs_json, *others in rows:
        db.executemany("INSERT INTO blob_uses(ref, dispatch_id) VALUES (?,?) ON CONFLICT DO NOTHING",
                       [(r, dispatch_id) for r in dict.fromkeys([*json.loads(refs_json), *others])
                        if r])


def _v5_node_worker(db: Db, d: Dialect, store: SqlBase) -> None:
    """``nodes.worker``: the Dask worker that ran each node (its address), for the web UI's
    timeline (issue #24; a data dir of the versions before schema versions that had it gained
    it silently on open: then it is there already)."""
    if "worker" not in columns(db, d, "nodes"):
        db.execute("ALTER TABLE nodes ADD COLUMN worker TEXT")


def _v6_owners(db: Db, d: Dialect, store: SqlBase) -> None:
    """Users and owners (issue #26): ``users`` (a name, whether an admin, the sha256 of its
    token, when made, revoked and last used) and an ``owner`` on every dispatch and trigger;
    what was stored before belongs to the single-user owner, ``admin`` (the server's own
    token)."""
    db.execute("""CREATE TABLE IF NOT EXISTS users (
        name TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, admin INTEGER NOT NULL,
        created_at TEXT NOT NULL, revoked_at TEXT, last_used_at TEXT)""")
    for table in ("dispatches", "triggers"):
        if "owner" not in columns(db, d, table):
            db.execute(f"ALTER TABLE {table} ADD COLUMN owner TEXT NOT NULL DEFAULT '{BUILTIN_OWNER}'")
    db.execute("CREATE INDEX IF NOT EXISTS dispatches_owner"
               " ON dispatches(owner, parent_dispatch_id, created_at)")


def _v7_replicas(db: Db, d: Dialect, store: SqlBase) -> None:
    """Tables for replicas on one database (``leases``): the leases (expiry on the database's
    clock), the fires of triggers (one row per tick or event) and cancels for another replica."""
    stamp = "TIMESTAMPTZ" if d.name == "postgresql" else "TEXT"
    db.execute(f"CREATE TABLE IF NOT EXISTS leases (resource TEXT PRIMARY KEY, owner TEXT NOT NULL,"
               f" epoch {d.bigint} NOT NULL, expires_at {stamp} NOT NULL)")
    db.execute("CREATE TABLE IF NOT EXISTS trigger_fires (trigger_id TEXT NOT NULL,"
               " tick TEXT NOT NULL, dispatch_id TEXT NOT NULL, fired_at TEXT NOT NULL,"
               " PRIMARY KEY (trigger_id, tick))")
    db.execute("CREATE TABLE IF NOT EXISTS cancel_requests (request_id TEXT PRIMARY KEY,"
               " dispatch_id TEXT NOT NULL, nodes TEXT, requested_at TEXT NOT NULL)")
    db.execute("CREATE INDEX IF NOT EXISTS cancel_requests_dispatch"
               " ON cancel_requests(dispatch_id)")


def _v8_cancel_answers(db: Db, d: Dialect, store: SqlBase) -> None:
    """``cancel_requests.answer``: what the replica running a dispatch made of a cancel another
    replica stored (the response, or the error, as JSON), for that replica to give its client
    (a whole cancel carried out while a node failed ends the dispatch FAILED: only the owner
    knows the cancel did stop nodes)."""
    if "answer" not in columns(db, d, "cancel_requests"):
        db.execute("ALTER TABLE cancel_requests ADD COLUMN answer TEXT")


def _v9_graphs(db: Db, d: Dialect, store: SqlBase) -> None:
    """``dispatch_graphs``: each dispatch's graph JSON in a row of its own, out of the
    ``dispatches`` row (whose ``graph`` is left empty). SQLite writes a whole row again at every
    update of it: a dispatch's start and end rewrote its graph each time (1.3 MB for a 32x32
    square, 14-18 ms of the commit that ends it; 50 MB at 100,000 nodes), in the one thread
    every read and write of the store waits for."""
    db.execute("CREATE TABLE IF NOT EXISTS dispatch_graphs (dispatch_id TEXT PRIMARY KEY,"
               " graph TEXT NOT NULL)")
    db.execute("INSERT INTO dispatch_graphs(dispatch_id, graph) SELECT dispatch_id, graph"
               " FROM dispatches WHERE graph <> '' ON CONFLICT DO NOTHING")
    db.execute("UPDATE dispatches SET graph = '' WHERE graph <> ''")


MIGRATIONS: list[Migration] = [
    Migration(1, "tables dispatches, nodes, triggers, blobs", _v1_tables),
    Migration(2, "node columns preview, output_size, gather, reused_from, attempts; indexes "
                 "for the listing and for reused outputs", _v2_node_columns),
    Migration(3, "gathering nodes stored as pickles of an older SDK (covalent._assembly) "
                 "recorded as their parts; POSTPROCESSING_FAILED recorded FAILED", _v3_gathers),
    Migration(4, "table blob_uses (which dispatch uses which blob: deletes by index), table "
                 "deletions (deletes under way)", _v4_blob_uses),
    Migration(5, "node column worker (the Dask worker that ran it)", _v5_node_worker),
    Migration(6, "table users (a token per user, stored hashed); column owner on dispatches "
                 "and triggers (existing rows: admin)", _v6_owners),
    Migration(7, "tables leases, trigger_fires, cancel_requests (replicas on one database)",
              _v7_replicas),
    Migration(8, "column answer on cancel_requests (the running replica's answer to a cancel)",
              _v8_cancel_answers),
    Migration(9, "table dispatch_graphs (a dispatch's graph, moved out of its dispatches row)",
              _v9_graphs),
]
LATEST = MIGRATIONS[-1].version


def columns(db: Db, d: Dialect, table: str) -> set[str]:
    """The column names of ``table`` (a fixed identifier)."""
    if d.name == "sqlite":
        return {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
    return {r[0] for r in db.execute("SELECT column_name FROM information_schema.columns"
                                     " WHERE table_schema = current_schema() AND table_name = ?",
                                     (table,))}


def tables(db: Db, d: Dialect) -> set[str]:
    if d.name == "sqlite":
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return {r[0] for r in db.execute("SELECT table_name FROM information_schema.tables"
                                     " WHERE table_schema = current_schema()")}


def current_version(db: Db, d: Dialect) -> int:
    """The highest migration applied; 0 for an empty database or one from before versions."""
    if "schema_migrations" not in tables(db, d):
        return 0
    row = db.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def pending(version: int) -> list[Migration]:
    return [m for m in MIGRATIONS if m.version > version]


def check_version(version: int, where: str) -> None:
    """Refuse a database a newer version wrote (it is left as it is)."""
    if version > LATEST:
        raise StoreVersionError(
            f"{where} was written by a newer version of covalent-dask (schema version {version}; "
            f"this version knows up to {LATEST}). Nothing was changed: run the newer version, or "
            "point this one at another data dir (--data-dir) or database (--db-url).")


def migrate(db: Db, d: Dialect, store: SqlBase, migration: Migration, stamp: str) -> None:
    """Apply one migration and record it (the caller holds the transaction)."""
    db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
               " summary TEXT NOT NULL, applied_at TEXT NOT NULL)")
    migration.apply(db, d, store)
    db.execute("INSERT INTO schema_migrations(version, summary, applied_at) VALUES (?,?,?)",
               (migration.version, migration.summary, stamp))
