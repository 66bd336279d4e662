"""The SQLite store on its own: typed records, retried creates, blobs, triggers, deletion."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher import state
from dispatcher.state import Status
from dispatcher.store import DispatchExists, NewDispatch, SqliteStore, SqlStore, TriggerRecord, blob_ref

pytestmark = pytest.mark.all_stores  # run on every store (tests/conftest.py)

A = "00000000-0000-4000-8000-00000000000a"
B = "00000000-0000-4000-8000-00000000000b"


def _new(dispatch_id: str, status: Status = Status.RUNNING) -> NewDispatch:
    return NewDispatch(dispatch_id, dispatch_id, "wf", status, "2026-01-01T00:00:00+00:00",
                       '{"nodes":[],"edges":[]}', [(0, "a", "electron")])




async def test_a_dispatch_round_trips_as_typed_records(store: SqlStore) -> None:
    big = b"x" * (300 * 1024)  # over the inline limit: a file
    refs = await store.create_dispatch(_new(A), [b"fn", big], {"inputs_ref": b"in"})
    assert refs == [blob_ref(b"fn"), blob_ref(big)]
    row = await store.get_dispatch(A)
    assert row is not None and row.status == Status.RUNNING and row.blob_refs == refs
    assert row.inputs_ref == blob_ref(b"in") and row.result_ref is None
    assert (store.blob_dir / refs[1][:2] / refs[1]).read_bytes() == big
    assert await store.get_blobs(refs) == {refs[0]: b"fn", refs[1]: big}
    [node] = await store.get_nodes(A)
    assert (node.node_id, node.name, node.status, node.output_ref) == (0, "a", Status.NEW_OBJECT, None)
    [summary] = await store.list_dispatches(None, 10)
    assert summary.to_json()["status"] == "RUNNING"
    with pytest.raises(DispatchExists):
        await store.create_dispatch(_new(A), [], {})


async def test_some_nodes_are_read_by_id_and_only_those(store: SqlStore, monkeypatch: pytest.MonkeyPatch) -> None:
    names = [(i, f"n{i}", "electron") for i in range(1200)]
    await store.create_dispatch(NewDispatch(B, B, "wf", Status.RUNNING, "2026-01-01T00:00:00+00:00",
                                            '{"nodes":[],"edges":[]}', names), [], {})
    asked = [1199, 3, 3, 700, 5000, -1, 0]  # repeated, unknown and negative ids too
    some = await store.get_some_nodes(B, asked)
    assert sorted(some) == [0, 3, 700, 1199]
    assert all(some[i].node_id == i and some[i].name == f"n{i}" for i in some)
    assert await store.get_some_nodes(A, [0, 1]) == {}  # no such dispatch: nothing
    every = await store.get_some_nodes(B, range(1200))  # in slices of the IN list's limit
    assert list(every) == list(range(1200))
    monkeypatch.setattr("dispatcher.store.sqlstore.SOME_NODES_MAX", 10)  # most of them: one pass
    assert await store.get_some_nodes(B, range(1, 1200, 2)) == {i: every[i] for i in range(1, 1200, 2)}


async def test_text_user_code_made_is_stored_escaped(store: SqlStore) -> None:
    await store.create_dispatch(_new(A), [], {})
    await store.apply([state.node_failed(A, 0, "bad \udcff name", "t", stdout="x \udc80")], [])
    [node] = await store.get_nodes(A)
    assert node.error == "bad \\udcff name" and node.stdout == "x \\udc80"


async def test_deleting_keeps_blobs_another_dispatch_uses(store: SqlStore) -> None:
    shared, only_a = b"s" * (300 * 1024), b"a" * (300 * 1024)
    await store.create_dispatch(_new(A), [shared, only_a], {})
    await store.create_dispatch(_new(B), [shared], {})
    assert await store.delete_dispatches([A, B]) == []  # both still running: nothing deleted
    await store.apply([], [state.dispatch_ended(A, {}, ["a"], False, "t", None)])
    assert await store.finished_before(None, None) == [A]
    assert await store.delete_dispatches([A, B]) == [A]
    assert await store.get_dispatch(A) is None and await store.get_dispatch(B) is not None
    assert await store.get_blobs([blob_ref(shared)]) == {blob_ref(shared): shared}
    assert await store.get_blobs([blob_ref(only_a)]) == {}
    assert not (store.blob_dir / blob_ref(only_a)[:2] / blob_ref(only_a)).exists()
    assert (store.blob_dir / blob_ref(shared)[:2] / blob_ref(shared)).exists()


async def test_triggers_are_records(store: SqlStore) -> None:
    await store.add_trigger(TriggerRecord("t1", A, "TimeTrigger", '{"time_gap": 1}', None, True, 0,
                                          "", "2026"))
    await store.save_trigger("t1", '{"time_gap": 1}', False, 3, "stopped")
    [t] = await store.all_triggers()
    assert (t.active, t.fire_count, t.reason, t.spec) == (False, 3, "stopped", {"time_gap": 1})
    assert await store.active_triggers() == []
    await store.delete_trigger("t1")
    assert await store.all_triggers() == []


async def test_an_older_store_gains_the_reused_from_column_on_open(tmp_path: Path) -> None:
    import sqlite3

    db = sqlite3.connect(tmp_path / "old.db")  # the nodes table before reuse was recorded
    db.execute("CREATE TABLE nodes (dispatch_id TEXT NOT NULL, node_id INTEGER NOT NULL,"
               " name TEXT NOT NULL, kind TEXT NOT NULL, status TEXT NOT NULL, start_time TEXT,"
               " end_time TEXT, output_ref TEXT, error TEXT, stdout TEXT, stderr TEXT,"
               " sub_dispatch_id TEXT, PRIMARY KEY (dispatch_id, node_id)) WITHOUT ROWID")
    db.close()
    s = SqliteStore(tmp_path / "old.db", tmp_path / "blobs")
    await s.open()
    try:
        await s.create_dispatch(_new(A), [], {})
        await s.apply([state.node_completed(A, 0, b"out", "t", "t", reused_from=B)], [])
        [node] = await s.get_nodes(A)
        assert node.reused_from == B and node.to_json()["reused_from"] == B
        assert (node.start_time, node.end_time) == ("t", "t")
    finally:
        await s.close()


async def test_a_running_node_reset_for_a_rerun_forgets_its_start_and_its_worker(
        store: SqlStore) -> None:
    # After a restart, a node that was RUNNING is NEW_OBJECT again; it kept the old run's
    # worker, shown beside a status that says it has not started.
    await store.create_dispatch(_new(A), [], {})
    await store.apply([state.node_running(A, 0, "2026-01-01T00:00:01+00:00", "tcp://w:1")], [])
    [node] = await store.get_nodes(A)
    assert (node.status, node.worker) == (Status.RUNNING, "tcp://w:1")
    await store.reset_nodes(A, [0])
    [node] = await store.get_nodes(A)
    assert (node.status, node.start_time, node.worker) == (Status.NEW_OBJECT, None, None)
