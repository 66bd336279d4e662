"""Each schema migration, on each store: what it changes, that it keeps what was there, and that
a database from a newer version is refused and left as it is."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dispatcher.errors import StoreVersionError
from dispatcher.store import SqlStore, open_store
from dispatcher.store.schema import LATEST, MIGRATIONS, columns, current_version, migrate, tables
from dispatcher.store.sql import Db

pytestmark = pytest.mark.all_stores  # run on every store (tests/conftest.py)

D = "00000000-0000-4000-8000-0000000000d1"


@pytest.fixture
def fresh(store_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    """A store (not opened) on an empty database of its own."""
    url = ""
    if store_kind == "postgres":
        server = request.getfixturevalue("postgres")
        name = f"m_{uuid.uuid4().hex[:12]}"
        url = server.create_database(name)
    yield open_store(url, tmp_path / "d.db", tmp_path / "blobs")
    if url:
        server.drop_database(name)


@contextlib.contextmanager
def raw(store: SqlStore) -> Iterator[Db]:
    """A connection to the store's database outside the store (autocommit)."""
    if store.dialect.name == "sqlite":
        conn = sqlite3.connect(store.db_path, isolation_level=None)  # type: ignore[attr-defined]
        try:
            yield conn
        finally:
            conn.close()
        return
    import psycopg

    from dispatcher.store.postgres import PgDb

    with psycopg.connect(store.conninfo, autocommit=True) as pg:  # type: ignore[attr-defined]
        yield PgDb(pg)


def upgrade(db: Db, store: SqlStore, to: int) -> None:
    for m in MIGRATIONS:
        if current_version(db, store.dialect) < m.version <= to:
            migrate(db, store.dialect, store, m, "2026-01-01T00:00:00+00:00")


def test_the_migrations_are_numbered_in_order() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, LATEST + 1))
    assert all(m.summary for m in MIGRATIONS)


def test_1_and_2_make_the_tables_and_keep_a_column_an_older_store_added(fresh: SqlStore) -> None:
    with raw(fresh) as db:
        upgrade(db, fresh, 1)
        assert {"dispatches", "nodes", "triggers", "blobs"} <= tables(db, fresh.dialect)
        assert "preview" not in columns(db, fresh.dialect, "nodes")
        db.execute("ALTER TABLE nodes ADD COLUMN reused_from TEXT")  # as open() once did silently
        db.execute("INSERT INTO nodes(dispatch_id, node_id, name, kind, status, reused_from)"
                   " VALUES (?, 0, 'a', 'electron', 'COMPLETED', 'x')", (D,))
        upgrade(db, fresh, 2)
        assert {"preview", "output_size", "gather", "reused_from", "attempts"} <= \
            columns(db, fresh.dialect, "nodes")
        assert db.execute("SELECT reused_from FROM nodes").fetchall() == [("x",)]
        assert current_version(db, fresh.dialect) == 2


def _old_gathered_dispatch(db: Db, store: SqlStore) -> dict[str, str]:
    """A dispatch as 27c8847 stored ``{"k": add(...)}`` returned from a lattice: node 0 an
    electron, 1 a dict gathering it, 2 the result; gathered outputs as pickles."""
    keys = b"pickled keys"
    old_dict, old_result = b"old dict pickle" * 10_000, b"old result pickle"  # a file, inline
    refs = {name: hashlib.sha256(data).hexdigest() for name, data in
            (("keys", keys), ("dict", old_dict), ("result", old_result), ("out", b"1"))}
    graph = {"nodes": [{"id": 0, "name": "add", "kind": "electron"},
                       {"id": 1, "name": ":electron_dict:", "kind": "dict", "value": 0},
                       {"id": 2, "name": ":postprocess:", "kind": "postprocess"}],
             "edges": [[0, 1, "k", "arg", 0], [1, 2, "node:1", "kwarg", None]]}
    db.execute("INSERT INTO dispatches(dispatch_id, root_dispatch_id, name, status, created_at,"
               " graph, blob_refs, result_ref) VALUES (?,?,?,?,?,?,?,?)",
               (D, D, "wf", "COMPLETED", "t", json.dumps(graph), json.dumps([refs["keys"]]),
                refs["result"]))
    db.executemany("INSERT INTO nodes(dispatch_id, node_id, name, kind, status, output_ref)"
                   " VALUES (?,?,?,?,'COMPLETED',?)",
                   [(D, 0, "add", "electron", refs["out"]), (D, 1, ":electron_dict:", "dict",
                    refs["dict"]), (D, 2, ":postprocess:", "postprocess", refs["result"])])
    store.blobs.put(old_dict, refs["dict"])
    db.executemany("INSERT INTO blobs(ref, size, data, path) VALUES (?,?,?,?)",
                   [(refs["keys"], len(keys), keys, None), (refs["out"], 1, b"1", None),
                    (refs["dict"], len(old_dict), None, store.blobs.location(refs["dict"])),
                    (refs["result"], len(old_result), old_result, None)])
    db.execute("INSERT INTO dispatches(dispatch_id, root_dispatch_id, name, status, created_at,"
               " graph, blob_refs) VALUES (?,?,?,?,?,?,?)",
               (D[:-1] + "2", D[:-1] + "2", "pp", "POSTPROCESSING_FAILED", "t", "{}", "[]"))
    return refs


def test_3_records_old_gathered_pickles_as_their_parts(fresh: SqlStore) -> None:
    with raw(fresh) as db:
        upgrade(db, fresh, 2)
        refs = _old_gathered_dispatch(db, fresh)
        upgrade(db, fresh, 3)
        rows = {n: (g, ref) for n, g, ref in db.execute(
            "SELECT node_id, gather, output_ref FROM nodes ORDER BY node_id")}
        assert rows[0] == (None, refs["out"])  # an electron's output is left as it was
        assert json.loads(rows[1][0]) == {
            "kind": "dict", "parts": [0], "layout": [["arg", "k", 0]],
            "extra": base64.b64encode(b"pickled keys").decode()} and rows[1][1] is None
        assert json.loads(rows[2][0]) == {"kind": "postprocess", "parts": [1],
                                          "layout": [["kwarg", "node:1", None]]}
        statuses = dict(db.execute("SELECT name, status FROM dispatches").fetchall())
        assert statuses == {"wf": "COMPLETED", "pp": "FAILED"}
        assert db.execute("SELECT result_ref FROM dispatches WHERE dispatch_id = ?",
                          (D,)).fetchone() == (None,)
        kept = {r for (r,) in db.execute("SELECT ref FROM blobs")}
        assert kept == {refs["keys"], refs["out"]}  # the old pickles went: nothing uses them
        assert not fresh.blobs.exists(refs["dict"])


def test_4_lists_every_blob_each_dispatch_names(fresh: SqlStore) -> None:
    with raw(fresh) as db:
        upgrade(db, fresh, 3)
        db.execute("INSERT INTO dispatches(dispatch_id, root_dispatch_id, name, status, created_at,"
                   " graph, blob_refs, inputs_ref, lattice_ref) VALUES (?,?,?,?,?,?,?,?,?)",
                   (D, D, "wf", "COMPLETED", "t", "{}", json.dumps(["f", "p", "f"]), "i", "l"))
        upgrade(db, fresh, 4)
        assert sorted(db.execute("SELECT ref, dispatch_id FROM blob_uses").fetchall()) == \
            [(r, D) for r in ("f", "i", "l", "p")]
        assert db.execute("SELECT COUNT(*) FROM deletions").fetchone() == (0,)


def test_5_adds_the_worker_column_and_keeps_the_one_an_older_store_added(fresh: SqlStore) -> None:
    with raw(fresh) as db:
        upgrade(db, fresh, 4)
        assert "worker" not in columns(db, fresh.dialect, "nodes")
        # A data dir of a version before schema versions that had the column (it added it on open)
        db.execute("ALTER TABLE nodes ADD COLUMN worker TEXT")
        db.execute("INSERT INTO nodes(dispatch_id, node_id, name, kind, status, worker)"
                   " VALUES (?, 0, 'a', 'electron', 'COMPLETED', 'tcp://w:1')", (D,))
        upgrade(db, fresh, 5)
        assert db.execute("SELECT worker FROM nodes").fetchall() == [("tcp://w:1",)]
        assert current_version(db, fresh.dialect) == 5


def test_9_moves_each_graph_to_a_row_of_its_own_and_a_status_update_leaves_it(
        fresh: SqlStore) -> None:
    graph = json.dumps({"nodes": [{"id": 0, "name": "add", "kind": "electron"}], "edges": []})
    with raw(fresh) as db:
        upgrade(db, fresh, 8)
        db.execute("INSERT INTO dispatches(dispatch_id, root_dispatch_id, name, status, created_at,"
                   " graph, blob_refs) VALUES (?,?,?,?,?,?,?)",
                   (D, D, "wf", "RUNNING", "t", graph, "[]"))
        upgrade(db, fresh, 9)
        assert db.execute("SELECT graph FROM dispatches").fetchall() == [("",)]
        assert db.execute("SELECT dispatch_id, graph FROM dispatch_graphs").fetchall() == \
            [(D, graph)]
        row = fresh._get_dispatch(db, D)
        assert row is not None and row.graph_json == graph and row.status == "RUNNING"
        db.execute("UPDATE dispatches SET status = 'COMPLETED' WHERE dispatch_id = ?", (D,))
        assert fresh._get_dispatch(db, D).graph_json == graph  # type: ignore[union-attr]


async def test_opening_applies_what_is_missing_each_in_its_own_transaction(
        fresh: SqlStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from dispatcher.store import schema

    def broken(db: Db, *_: Any) -> None:
        db.execute("CREATE TABLE half_done (x INTEGER)")
        raise RuntimeError("migration 4 failed")

    monkeypatch.setattr(schema, "MIGRATIONS", [*MIGRATIONS[:3], schema.Migration(4, "x", broken)])
    with pytest.raises(RuntimeError, match="migration 4 failed"):
        await fresh.open()
    with raw(fresh) as db:
        assert current_version(db, fresh.dialect) == 3  # the three before it are kept
        assert "half_done" not in tables(db, fresh.dialect)  # nothing of the failed one
    monkeypatch.undo()
    fresh = _again(fresh)
    await fresh.open()
    await fresh.close()
    with raw(fresh) as db:
        assert current_version(db, fresh.dialect) == LATEST


def _again(store: SqlStore) -> SqlStore:
    """Another store object on the same database (a closed one is not opened again)."""
    url = getattr(store, "url", "")
    return open_store(url, getattr(store, "db_path", Path("unused")), store.blob_dir)


async def test_a_database_of_a_newer_version_is_refused_and_left_as_it_is(
        fresh: SqlStore) -> None:
    await fresh.open()
    await fresh.close()
    fresh = _again(fresh)
    with raw(fresh) as db:
        db.execute("INSERT INTO schema_migrations(version, summary, applied_at) VALUES"
                   " (?, 'from the future', 't')", (LATEST + 1,))
        snapshot = _snapshot(db)
    before = fresh.db_path.read_bytes() if fresh.dialect.name == "sqlite" else b""  # type: ignore[attr-defined]
    with pytest.raises(StoreVersionError, match=f"newer version .*schema version {LATEST + 1}.*"
                                                "Nothing was changed"):
        await fresh.open()
    with pytest.raises(StoreVersionError):
        await fresh.upgrade_plan()
    with raw(fresh) as db:
        assert _snapshot(db) == snapshot
    if fresh.dialect.name == "sqlite":
        assert fresh.db_path.read_bytes() == before  # type: ignore[attr-defined]


def _snapshot(db: Db) -> list[Any]:
    return [db.execute("SELECT version, summary FROM schema_migrations ORDER BY version").fetchall(),
            sorted(db.execute("SELECT COUNT(*) FROM dispatches").fetchall())]


def test_covalent_db_upgrade_says_then_does_then_has_nothing_to_do(fresh: SqlStore) -> None:
    import subprocess
    import sys

    from tests.faults.conftest import REPO

    url = getattr(fresh, "url", "") or f"sqlite://{fresh.db_path}"  # type: ignore[attr-defined]

    def covalent(*args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "dispatcher.cli", "db", "upgrade",
                              "--db-url", url, *args], capture_output=True, text=True, timeout=60,
                             cwd=REPO)
        assert out.returncode == 0, out.stderr
        return out.stdout

    dry = covalent("--dry-run")
    assert "Would apply:" in dry and "nothing was changed" in dry
    assert "password" not in dry and "Schema version: none yet" in dry
    with raw(fresh) as db:
        assert current_version(db, fresh.dialect) == 0
    assert f"Done: schema version {LATEST}" in covalent()
    assert "Up to date" in covalent("--dry-run")
    # Covalent's spelling, from its docs (how_to/db/migration_error): the same command
    again = subprocess.run([sys.executable, "-m", "dispatcher.cli", "db", "migrate", "--db-url",
                            url], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert again.returncode == 0 and "Up to date" in again.stdout, again.stderr
    version = subprocess.run([sys.executable, "-m", "dispatcher.cli", "-v"], capture_output=True,
                             text=True, timeout=60, cwd=REPO)  # Covalent's `covalent -v`
    assert version.returncode == 0 and version.stdout.startswith("covalent, version ")
