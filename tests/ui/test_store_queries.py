"""The store's reads for the web UI and progress views: listing pages, electron counts, nodes.

The 10,000-dispatch listing is timed and the time printed (``-s`` shows it), not asserted.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dispatcher import state
from dispatcher.state import Status
from dispatcher.store import DispatchQuery, NewDispatch, SqlStore

pytestmark = pytest.mark.all_stores  # run on every store (tests/conftest.py)

GRAPH = '{"nodes":[],"edges":[]}'
NODES = [(0, "add", "electron"), (1, ":parameter:1", "parameter"), (2, "add", "electron"),
         (3, ":electron_list:", "list"), (4, ":sublattice:sub", "sublattice"),
         (5, ":postprocess:", "postprocess")]


def _new(i: int, name: str, status: Status = Status.RUNNING, parent: str | None = None) -> NewDispatch:
    did = str(uuid.UUID(int=i, version=4))
    return NewDispatch(did, did, name, status, f"2026-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}+00:00",
                       GRAPH, NODES, start_time="2026-01-01T00:00:00+00:00",
                       parent_dispatch_id=parent, parent_node_id=4 if parent else None)




async def test_a_page_filters_searches_sorts_and_counts(store: SqlStore) -> None:
    names = ["alpha", "beta", "alpha_2", "gamma"]
    for i, name in enumerate(names):
        await store.create_dispatch(_new(i + 1, name), [], {})
    ids = [str(uuid.UUID(int=i + 1, version=4)) for i in range(4)]
    await store.create_dispatch(_new(99, "child", parent=ids[0]), [], {})  # not listed
    await store.apply([], [state.dispatch_ended(ids[1], {0: "boom"}, ["add"], False,
                                                "2026-01-01T00:00:09+00:00", None)])
    page = await store.page_dispatches(DispatchQuery())
    assert [r.name for r in page.rows] == ["gamma", "alpha_2", "beta", "alpha"]  # newest first
    assert page.total == 4 and page.counts == {"RUNNING": 3, "FAILED": 1}
    failed = await store.page_dispatches(DispatchQuery(status="FAILED"))
    assert [r.name for r in failed.rows] == ["beta"] and failed.total == 1
    assert failed.counts == page.counts  # the filter buttons keep showing every status
    found = await store.page_dispatches(DispatchQuery(search="ALPHA"))
    assert {r.name for r in found.rows} == {"alpha", "alpha_2"} and found.counts == {"RUNNING": 2}
    assert [r.name for r in (await store.page_dispatches(DispatchQuery(search="a_"))).rows] == ["alpha_2"]
    by_id = await store.page_dispatches(DispatchQuery(search=ids[2][-6:].upper()))
    assert [r.dispatch_id for r in by_id.rows] == [ids[2]]
    by_name = await store.page_dispatches(DispatchQuery(sort="name", descending=False, limit=2, offset=1))
    assert [r.name for r in by_name.rows] == ["alpha_2", "beta"] and by_name.total == 4
    assert (await store.page_dispatches(DispatchQuery(sort="runtime"))).rows[-1].name == "beta"


async def test_a_page_keeps_only_dispatches_created_in_a_time_window(store: SqlStore) -> None:
    for i in (1, 30, 59):  # created at 00:00:01, 00:00:30, 00:00:59
        await store.create_dispatch(_new(i, f"wf{i}"), [], {})
    after = await store.page_dispatches(DispatchQuery(created_after="2026-01-01T00:00:20+00:00"))
    assert [r.name for r in after.rows] == ["wf59", "wf30"] and after.counts == {"RUNNING": 2}
    window = await store.page_dispatches(DispatchQuery(created_after="2026-01-01T00:00:20+00:00",
                                                       created_before="2026-01-01T00:00:40+00:00"))
    assert [r.name for r in window.rows] == ["wf30"] and window.total == 1


async def test_a_pending_dispatch_is_deleted_only_when_asked(store: SqlStore) -> None:
    await store.create_dispatch(_new(1, "pending", Status.NEW_OBJECT), [], {})
    await store.create_dispatch(_new(2, "running"), [], {})
    pending, running = (str(uuid.UUID(int=i, version=4)) for i in (1, 2))
    assert await store.delete_dispatches([pending, running]) == []  # neither has finished
    assert await store.delete_dispatches([pending, running], pending=True) == [pending]
    assert await store.get_status(pending) is None and await store.get_status(running) == Status.RUNNING


async def test_ids_are_found_by_their_start(store: SqlStore) -> None:
    ids = [str(uuid.UUID(int=i, version=4)) for i in (0x1234 << 112, 0x1235 << 112, 0x9 << 120)]
    for n, i in enumerate(ids):
        await store.create_dispatch(NewDispatch(i, i, "wf", Status.RUNNING, f"2026-01-01T00:00:0{n}+00:00",
                                                GRAPH, NODES), [], {})
    assert await store.find_ids("123", 10) == [ids[1], ids[0]]  # newest first
    assert await store.find_ids("1234", 10) == [ids[0]]
    assert await store.find_ids(ids[2], 10) == [ids[2]]
    assert await store.find_ids("ff", 10) == [] and await store.find_ids("1", 1) == [ids[1]]


async def test_electron_counts_count_user_electrons_only(store: SqlStore) -> None:
    await store.create_dispatch(_new(1, "wf"), [], {})
    did = str(uuid.UUID(int=1, version=4))
    await store.apply([state.node_completed(did, 0, b"x", "t", "t", preview="2"),
                       state.node_completed(did, 1, b"1", "t", "t"),
                       state.node_running(did, 2, "t", worker="tcp://127.0.0.1:4711")], [])
    counts = await store.electron_counts([did, "missing"])
    assert counts == {did: {Status.COMPLETED: 1, Status.RUNNING: 1, Status.NEW_OBJECT: 1}, "missing": {}}
    rows = await store.node_rows(did)
    assert [(r.node_id, r.kind, r.status) for r in rows][:3] == [
        (0, "electron", Status.COMPLETED), (1, "parameter", Status.COMPLETED), (2, "electron", Status.RUNNING)]
    assert [r.worker for r in rows][:3] == [None, None, "tcp://127.0.0.1:4711"]  # the timeline's lanes
    assert (await store.get_nodes(did))[2].worker == "tcp://127.0.0.1:4711"
    node = await store.get_node(did, 0)
    assert node is not None and node.preview == "2" and node.output_size == 1
    assert await store.get_node(did, 42) is None


@pytest.mark.slow
async def test_listing_10000_dispatches_pages_filters_and_searches(store: SqlStore) -> None:
    def timed_ms(start: float) -> float:
        return round((time.perf_counter() - start) * 1000, 1)

    for i in range(10_000):
        await store.create_dispatch(_new(i + 1, f"wf-{i % 97}", Status.RUNNING if i % 10 else Status.COMPLETED), [], {})
    searched = sum(1 for i in range(10_000) if f"wf-{i % 97}".startswith("wf-42"))
    report = {}
    for label, query, total in [("newest", DispatchQuery(), 10_000),
                                ("page 100", DispatchQuery(offset=5000), 10_000),
                                ("status filter", DispatchQuery(status="COMPLETED"), 1_000),
                                ("search", DispatchQuery(search="wf-42"), searched),
                                ("sort by runtime", DispatchQuery(sort="runtime"), 10_000)]:
        start = time.perf_counter()
        page = await store.page_dispatches(query)
        report[label] = timed_ms(start)  # printed for people, never asserted (shared machines)
        assert page.total == total and len(page.rows) == 50, label
        assert sum(page.counts.values()) >= page.total
        if query.status:
            assert {r.status for r in page.rows} == {Status.COMPLETED}
        if query.search:
            assert all(r.name.startswith("wf-42") for r in page.rows)
    start = time.perf_counter()
    await store.electron_counts([r.dispatch_id for r in page.rows])
    report["electron counts of a page"] = timed_ms(start)
    print(f"\nlisting 10,000 dispatches (ms): {report}")
