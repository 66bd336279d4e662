"""The Recorder on a real store (each kind): batches, the commit point, a record the store refuses."""

from __future__ import annotations

import asyncio

import pytest

from dispatcher import state
from dispatcher.recorder import Commit, Recorder
from dispatcher.state import Status
from dispatcher.store import NewDispatch, SqlStore

pytestmark = pytest.mark.all_stores  # run on every store (tests/conftest.py)

D = "00000000-0000-4000-8000-00000000000d"


@pytest.fixture
async def recorder(store: SqlStore):
    await store.create_dispatch(NewDispatch(D, D, "wf", Status.RUNNING, "t", "{}",
                                            [(i, f"n{i}", "electron") for i in range(3)]), [], {})
    r = Recorder(store)
    await r.start()
    yield r
    await r.close()


async def test_subscribers_hear_only_what_is_committed(recorder: Recorder) -> None:
    heard: list[Commit] = []
    seen_on_disk: list[Status] = []

    def on_commit(commit: Commit) -> None:
        heard.append(commit)

    unsubscribe = recorder.subscribe(on_commit)
    ev = recorder.waiter(D)
    recorder.record(state.node_completed(D, 0, b"o", "t", "t"))
    recorder.ended(state.dispatch_ended(D, {}, ["a", "b", "c"], False, "t", b"r"))
    await asyncio.wait_for(ev.wait(), 5)  # the waiter wakes once the final status is on disk
    seen_on_disk.append((await recorder.store.get_dispatch(D)).status)  # type: ignore[union-attr]
    assert seen_on_disk == [Status.COMPLETED]
    assert [u.node_id for c in heard for u in c.nodes] == [0]
    assert [c.ended for c in heard if c.ended] == [[D]]
    unsubscribe()
    recorder.record(state.node_running(D, 1, "t"))
    await recorder.flush()
    assert len([c for c in heard if c.nodes]) == 1  # unsubscribed


async def test_a_record_sqlite_refuses_fails_its_node_and_the_rest_is_written(
        recorder: Recorder) -> None:
    poison = state.node_completed(D, 2, b"x", "t", "t", attempts=2**70)  # no column holds it
    bad_output = state.node_completed(D, 1, b"y", "t", "t")
    recorder.record(state.node_completed(D, 0, b"o", "t", "t"), poison, bad_output)
    await recorder.flush()
    nodes = await recorder.store.get_nodes(D)
    assert [n.status for n in nodes[:2]] == [Status.COMPLETED, Status.COMPLETED]
    assert recorder.write_error is None  # the writer is not stuck on the batch
    assert D in recorder.store_failed and "could not record this node" in recorder.store_failed[D]
    # The runner ends the dispatch with what could not be recorded (Runner._finish):
    recorder.ended(state.dispatch_ended(D, {}, ["a", "b", "c"], False, "t", b"r",
                                        recorder.store_failed.pop(D, None)))
    await recorder.flush()
    row = await recorder.store.get_dispatch(D)
    assert row is not None and row.status == Status.FAILED
    assert "could not record this node" in (row.error or "")


async def test_a_completed_decided_before_a_write_failed_is_recorded_failed(
        recorder: Recorder) -> None:
    # The runner ends a dispatch as its last outcome arrives; writing that outcome may fail
    # afterwards (a full disk, a record SQLite refuses). The final status must not say COMPLETED.
    ended = state.dispatch_ended(D, {}, ["a", "b", "c"], False, "t", b"r",
                                 recorder.store_failed.pop(D, None))  # nothing known to fail yet
    assert ended.status == Status.COMPLETED
    poison = state.node_completed(D, 0, b"x", "t", "t", attempts=2**70)  # no column holds it
    recorder.record(poison)
    await recorder.flush()
    assert D in recorder.store_failed
    recorder.ended(ended)
    await recorder.flush()
    row = await recorder.store.get_dispatch(D)
    assert row is not None and row.status == Status.FAILED
    assert "could not record this node" in (row.error or "")
    assert D not in recorder.store_failed  # settled once its final status is on disk


async def test_a_flush_waits_for_the_batch_the_writer_has_on_its_way(
        recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    # The runner flushes, then reads back the outputs a later submission consumes: a batch the
    # writer had taken just before must be committed by then (a taken-over dispatch failed
    # "the stored outputs of nodes [0] are gone" when flush returned with that batch in flight).
    store = recorder.store
    writing, release = asyncio.Event(), asyncio.Event()
    apply = store.apply

    async def held_apply(nodes: list[state.NodeUpdate], dispatches: list[state.DispatchUpdate]
                         ) -> None:
        writing.set()
        await release.wait()  # the commit takes a while (a busy database)
        await apply(nodes, dispatches)

    monkeypatch.setattr(store, "apply", held_apply)
    recorder.record(state.node_completed(D, 0, b"o", "t", "t"))
    await asyncio.wait_for(writing.wait(), 5)  # the writer has the batch, not committed yet

    async def flush_then_read() -> tuple[Status, str | None]:
        await recorder.flush()
        node = (await store.get_nodes(D))[0]
        return node.status, node.output_ref

    reading = asyncio.create_task(flush_then_read())
    await asyncio.wait({reading}, timeout=1)  # without the wait, the read is done by now
    release.set()
    status, ref = await asyncio.wait_for(reading, 5)
    assert status == Status.COMPLETED and ref is not None
