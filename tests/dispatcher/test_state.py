"""The state machine: transitions, and the store applying them (each kind of store)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dispatcher import state
from dispatcher.state import DISPATCH_TRANSITIONS, NODE_TRANSITIONS, Status
from dispatcher.store import NewDispatch, SqlStore

pytestmark = pytest.mark.all_stores  # run on every store (tests/conftest.py)

D = "8c1fd8b9-4a5e-4a61-9b0c-1f4ad0c2a0a1"


def test_terminal_statuses_move_nowhere() -> None:
    for terminal in state.TERMINAL:
        for target in Status:
            assert not state.may_enter(terminal, target, NODE_TRANSITIONS)
            assert not state.may_enter(terminal, target, DISPATCH_TRANSITIONS)


@pytest.mark.parametrize("current, target, allowed", [
    ("NEW_OBJECT", "RUNNING", True), ("NEW_OBJECT", "COMPLETED", True),
    ("RUNNING", "COMPLETED", True), ("RUNNING", "NEW_OBJECT", True),
    ("NEW_OBJECT", "NEW_OBJECT", False), ("COMPLETED", "RUNNING", False),
])
def test_node_transitions(current: str, target: str, allowed: bool) -> None:
    assert state.may_enter(current, target, NODE_TRANSITIONS) is allowed


def test_dispatch_transitions() -> None:
    assert state.may_enter("NEW_OBJECT", "RUNNING", DISPATCH_TRANSITIONS)
    assert state.may_enter("RUNNING", "RUNNING", DISPATCH_TRANSITIONS)  # resumed
    assert not state.may_enter("NEW_OBJECT", "COMPLETED", DISPATCH_TRANSITIONS)


def test_the_final_update_names_each_failed_node() -> None:
    update = state.dispatch_ended(D, {2: "ValueError: x", 0: "KeyError: y"}, ["a", "b", "c"],
                                  cancelled=True, end="t", result=b"r")
    assert update.status == Status.FAILED and update.result is None
    assert update.error == "Node 0 (a) failed: KeyError: y\nNode 2 (c) failed: ValueError: x"
    done = state.dispatch_ended(D, {}, ["a"], cancelled=False, end="t", result=b"r")
    assert (done.status, done.result) == (Status.COMPLETED, b"r")
    assert state.dispatch_ended(D, {}, ["a"], cancelled=True, end="t", result=None).status == "CANCELLED"


async def _node(store: SqlStore, node_id: int) -> Status:
    return (await store.get_nodes(D))[node_id].status


async def test_the_store_applies_only_allowed_transitions(store: SqlStore) -> None:
    await store.create_dispatch(NewDispatch(D, D, "wf", Status.RUNNING, "t0", '{"nodes":[],"edges":[]}',
                                            [(0, "a", "electron"), (1, "b", "electron")]), [], {})
    await store.apply([state.node_completed(D, 0, b"out", "t1", "t2")], [])
    await store.apply([state.node_running(D, 0, "t3")], [])  # a late RUNNING report
    assert await _node(store, 0) == Status.COMPLETED
    await store.apply([state.node_running(D, 1, "t1")], [])
    await store.apply([state.node_reset(D, 1)], [])  # resume: back to NEW_OBJECT
    assert await _node(store, 1) == Status.NEW_OBJECT
    await store.apply([state.node_cancelled(D, 1, "t4")], [state.dispatch_ended(D, {}, [], True, "t4", None)])
    await store.apply([state.node_completed(D, 1, b"late", "t1", "t5")],
                      [state.dispatch_ended(D, {}, ["a", "b"], False, "t5", b"r")])
    assert await _node(store, 1) == Status.CANCELLED  # a final status is final
    row = await store.get_dispatch(D)
    assert row is not None and row.status == Status.CANCELLED and row.result_ref is None
    nodes = await store.get_nodes(D)
    assert (await store.get_blobs([nodes[0].output_ref or ""])) == {nodes[0].output_ref: b"out"}


async def test_claiming_a_pending_dispatch_succeeds_once(store: SqlStore) -> None:
    await store.create_dispatch(NewDispatch(D, D, "wf", state.PENDING, "t0", "{}",
                                            [(0, "a", "electron")]), [], {})
    claims = await asyncio.gather(*(store.claim_pending(D, "t1") for _ in range(3)))
    assert sorted(claims) == [False, False, True]  # concurrent claims (PostgreSQL: side by side)
    assert await store.get_status(D) == Status.RUNNING
    assert await store.unfinished() == [D]


async def test_updates_are_applied_in_the_order_they_were_handed_over(store: SqlStore) -> None:
    # A large batch that completes the dispatch, then a small one that cancels it: on any store
    # the small one must not overtake the large one (PostgreSQL runs transactions side by side).
    n = 5000
    await store.create_dispatch(NewDispatch(D, D, "wf", Status.RUNNING, "t0", "{}",
                                            [(i, "a", "electron") for i in range(n)]), [], {})
    completes = store.apply([state.node_completed(D, i, b"o%d" % i, "t1", "t2") for i in range(n)],
                            [state.dispatch_ended(D, {}, ["a"] * n, False, "t2", None)])
    cancels = store.apply([state.node_cancelled(D, 0, "t3")],
                          [state.dispatch_ended(D, {}, ["a"] * n, True, "t3", None)])
    await asyncio.gather(completes, cancels)
    assert await store.get_status(D) == Status.COMPLETED
    assert {n.status for n in await store.get_nodes(D)} == {Status.COMPLETED}


# A batch of node updates as the recorder hands it over: runs of one kind of update over
# several nodes (a cancel's CANCELLED of every open node: updates alike but for their node,
# written as one statement from 16 on), mixed with single updates, in order.
_KINDS = ("running", "completed", "failed", "cancelled", "reset")


def _update(kind: str, dispatch_id: str, node_id: int, stamp: str) -> state.NodeUpdate:
    if kind == "running":
        return state.node_running(dispatch_id, node_id, stamp, worker="w")
    if kind == "completed":
        return state.node_completed(dispatch_id, node_id, None, stamp, stamp)
    if kind == "failed":
        return state.node_failed(dispatch_id, node_id, "ValueError: x", stamp)
    if kind == "cancelled":
        return state.node_cancelled(dispatch_id, node_id, stamp)
    return state.node_reset(dispatch_id, node_id)


Run = tuple[str, list[int], str]  # (kind, the nodes it updates in that order, its stamp)


@st.composite
def _batches(draw: st.DrawFn) -> tuple[int, list[list[Run]]]:
    """How many nodes, and batches of runs of updates over them."""
    n = draw(st.integers(1, 40))
    run = st.tuples(st.sampled_from(_KINDS), st.lists(st.integers(0, n - 1), max_size=40),
                    st.sampled_from(["t1", "t2"]))
    return n, draw(st.lists(st.lists(run, max_size=4), min_size=1, max_size=3))


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=_batches())
@example(plan=(20, [[("running", list(range(20)), "t1"), ("cancelled", list(range(20)), "t2"),
                     ("completed", [3], "t2")]]))
async def test_a_batch_lands_as_its_updates_one_at_a_time_would(
        store: SqlStore, plan: tuple[int, list[list[Run]]]) -> None:
    """The model: each update in turn, applied if its node may move into its status, then
    every field it names set. The store writes a run of updates alike but for their node as
    one statement; nothing may tell the two apart."""
    import uuid

    n, batches = plan
    d = str(uuid.uuid4())
    await store.create_dispatch(NewDispatch(d, d, "wf", Status.RUNNING, "t0", "{}",
                                            [(i, "a", "electron") for i in range(n)]), [], {})
    model: dict[int, dict[str, Any]] = {
        i: {"status": Status.NEW_OBJECT, "start_time": None, "end_time": None, "worker": None,
            "error": None} for i in range(n)}
    for batch in batches:
        updates = [_update(kind, d, i, stamp) for kind, ids, stamp in batch for i in ids]
        for u in updates:
            row = model[u.node_id]
            assert u.status is not None
            if state.may_enter(row["status"], u.status, NODE_TRANSITIONS):
                row["status"] = u.status
                for field in ("start_time", "end_time", "worker", "error"):
                    if getattr(u, field) is not None:
                        row[field] = getattr(u, field)
        await store.apply(updates, [])
    got = {r.node_id: {"status": r.status, "start_time": r.start_time, "end_time": r.end_time,
                       "worker": r.worker, "error": r.error} for r in await store.get_nodes(d)}
    assert got == model
