"""The state machine: transitions, and the store applying them (each kind of store)."""

from __future__ import annotations

import asyncio

import pytest

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
