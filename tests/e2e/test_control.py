"""Dispatch control: sublattices, cancel, disable_run / is_pending, redispatch."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

import covalent as ct
from covalent.errors import CovalentError
from covalent.wire import pieces
from dispatcher import dispatches, reuse
from dispatcher.keys import RUNNER, STORE
from dispatcher.machine import OPEN
from dispatcher.protocol import OUTCOME_TOPIC, unpack_outcome
from dispatcher.worker import interrupts as worker_interrupts
from dispatcher.worker.interrupts import interrupts
from tests.conftest import JSON, fetched, wait_until
from tests.conftest import run
from tests.faults.conftest import REPO
from tests import tasks
from tests.tasks import add, block, identity, mark, multiply, spin


@ct.electron
@ct.lattice
def inner(x):
    return [add(x, i) for i in range(x)]  # shape depends on the input: known only at run time


@ct.electron
@ct.lattice
def middle(x):
    return inner(identity(x))


async def test_sublattice_is_a_dynamic_child_dispatch(addr: str) -> None:
    @ct.lattice
    def wf(x):
        n = add(x, 1)
        return inner(n)

    result = await run(wf, addr, 2)
    assert result.status == "COMPLETED", result.error
    assert result.result == [3, 4, 5]
    node = await asyncio.to_thread(result.get_node_result, 3)  # fetches the child: not on the loop
    assert node["node_name"] == ":sublattice:inner"
    child = node["sublattice_result"]
    assert child.status == "COMPLETED" and child.result == [3, 4, 5]
    assert child.root_dispatch_id == result.dispatch_id != child.dispatch_id


async def test_nested_sublattices(addr: str) -> None:
    @ct.lattice
    def wf(x):
        return middle(x)

    result = await run(wf, addr, 2)
    assert result.result == [2, 3]
    child = (await asyncio.to_thread(result.get_node_result, 0))["sublattice_result"]
    grandchild = (await asyncio.to_thread(child.get_node_result, 2))["sublattice_result"]
    assert grandchild.result == [2, 3]
    assert grandchild.root_dispatch_id == result.dispatch_id


async def _running(addr: str, dispatch_id: str, node_id: int) -> None:
    def check() -> bool:
        r = ct.get_result(dispatch_id, dispatcher_addr=addr)
        return r.get_node_result(node_id)["status"] == "RUNNING"

    await wait_until(lambda: asyncio.to_thread(check), timeout=5)


@ct.electron
@ct.lattice
def _held_inside(x):
    return block(identity(x))


async def test_cancelling_a_sublattices_child_dispatch_cancels_its_node(addr: str) -> None:
    @ct.lattice
    def wf(x):
        return identity(_held_inside(x)), identity(x)

    dispatch_id = await asyncio.to_thread(ct.dispatch(wf, dispatcher_addr=addr), 5)

    def held_child() -> str | None:
        node = ct.get_result(dispatch_id, dispatcher_addr=addr).get_node_result(0)
        child = node["sublattice_result"]
        running = child is not None and child.get_node_result(2)["status"] == "RUNNING"
        return child.dispatch_id if running else None

    child = await wait_until(lambda: asyncio.to_thread(held_child), timeout=10, interval=0.1)
    await asyncio.to_thread(ct.cancel, child, None, addr)  # the child itself, not its parent
    result = await asyncio.wait_for(fetched(dispatch_id, addr), 10)
    nodes = await asyncio.to_thread(  # (a sublattice's node fetches its child: off the loop)
        lambda: {i: result.get_node_result(i) for i in range(6)})
    assert nodes[0]["node_name"] == ":sublattice:_held_inside"
    assert nodes[0]["status"] == "CANCELLED" and nodes[0]["error"] is None  # was FAILED
    assert result.status == "CANCELLED", result.error  # was FAILED: "... ended CANCELLED"
    assert [n["status"] for n in nodes.values() if n["node_name"] == "identity"] == [
        "CANCELLED", "COMPLETED"]  # what waited for it; the other branch ran
    assert (await fetched(child, addr)).status == "CANCELLED"


async def test_cancel_a_running_dispatch(addr: str) -> None:
    @ct.lattice
    def wf():
        a = identity(1)
        b = block(a)
        return a, identity(b)

    dispatch_id = await asyncio.to_thread(ct.dispatch(wf, dispatcher_addr=addr))
    await _running(addr, dispatch_id, 2)
    message = await asyncio.to_thread(ct.cancel, dispatch_id, None, addr)
    assert dispatch_id in message
    result = await asyncio.wait_for(fetched(dispatch_id, addr), 5)
    assert result.status == ct.status.CANCELLED
    assert [result.get_node_result(i)["status"] for i in range(5)] == [
        "COMPLETED", "COMPLETED", "CANCELLED", "CANCELLED", "CANCELLED"]
    assert result.get_node_result(0)["output"] == 1  # finished work keeps its output
    # Cancelled again, or once it ended: said, not raised (as in Covalent: a `finally:
    # ct.cancel(id)` must not fail because the dispatch ended first); nothing changes.
    again = await asyncio.to_thread(ct.cancel, dispatch_id, None, addr)
    assert again == f"Dispatch {dispatch_id} already ended CANCELLED; nothing to cancel."
    assert (await fetched(dispatch_id, addr)).get_node_result(0)["status"] == "COMPLETED"


async def test_cancel_interrupts_a_python_loop(addr: str, tmp_path) -> None:
    marker = tmp_path / "stopped"

    @ct.lattice
    def wf():
        return spin(str(marker))

    dispatch_id = await asyncio.to_thread(ct.dispatch(wf, dispatcher_addr=addr))
    await _running(addr, dispatch_id, 0)
    await asyncio.to_thread(ct.cancel, dispatch_id, None, addr)
    await wait_until(marker.exists, timeout=5)  # the task really stopped on the worker
    result = await fetched(dispatch_id, addr)
    assert result.status == "CANCELLED" and result.get_node_result(0)["status"] == "CANCELLED"


async def test_cancel_some_tasks_lets_the_rest_run(addr: str) -> None:
    @ct.lattice
    def wf():
        slow = block(1)
        after_slow = identity(slow)
        other = add(2, 3)
        return after_slow, multiply(other, 2)

    dispatch_id = await asyncio.to_thread(ct.dispatch(wf, dispatcher_addr=addr))
    await _running(addr, dispatch_id, 0)
    await asyncio.to_thread(ct.cancel, dispatch_id, [0], addr)
    result = await asyncio.wait_for(fetched(dispatch_id, addr), 5)
    assert result.status == "CANCELLED"
    statuses = {r["node_name"]: r["status"] for r in result.get_all_node_results()}
    assert statuses["block"] == "CANCELLED" and statuses["identity"] == "CANCELLED"
    assert statuses["multiply"] == "COMPLETED"
    assert result.get_node_result(6)["output"] == 10


async def test_cancelling_tasks_that_have_ended_changes_nothing(addr: str) -> None:
    """A cancel of a node that ended, with everything below it, stops nothing: the answer says
    so, and the dispatch ends as it would have, COMPLETED with its result (not CANCELLED with
    no node cancelled; Covalent's final status, too, is its nodes')."""
    @ct.lattice
    def wf():
        identity(add(1, 2))  # ends at once; the result does not use it
        return block(7)

    dispatch_id = await asyncio.to_thread(ct.dispatch(wf, dispatcher_addr=addr))
    ids = {}

    def ended() -> bool:
        nodes = ct.get_result(dispatch_id, dispatcher_addr=addr).get_all_node_results()
        ids.update((n["node_name"], n["node_id"]) for n in nodes)
        return {n["node_name"]: n["status"] for n in nodes}.get("identity") == "COMPLETED"

    await wait_until(lambda: asyncio.to_thread(ended), timeout=10)
    message = await asyncio.to_thread(ct.cancel, dispatch_id, [ids["add"], ids["identity"]], addr)
    assert message.startswith("Nothing to cancel"), message
    status = await asyncio.to_thread(ct.get_result, dispatch_id, False, addr, True)
    assert status["status"] == "RUNNING"
    tasks.release.set()
    result = await asyncio.wait_for(fetched(dispatch_id, addr), 10)
    assert result.status == "COMPLETED" and result.result == 7
    assert {r["status"] for r in result.get_all_node_results()} == {"COMPLETED"}
    late = await asyncio.to_thread(ct.cancel, dispatch_id, [ids["add"]], addr)
    assert "already ended COMPLETED; nothing to cancel" in late
    assert (await fetched(dispatch_id, addr)).status == "COMPLETED"


async def test_a_child_dispatch_that_comes_after_its_parent_was_cancelled_never_runs(
        addr: str, tmp_path) -> None:
    """A sublattice's child dispatch submitted just after its parent node was cancelled (the
    cancel read the parent's children before this one was stored) ends CANCELLED at once, its
    electrons never started; as a randomized run caught, it used to run on below the cancelled
    node of a CANCELLED parent."""
    from covalent.api import ClientConfig, submission_parts, submit_frame
    from covalent.config import client_config

    @ct.lattice
    def parent_wf():
        return block(1)

    @ct.lattice
    def child_wf(path):
        return mark(path, "ran")

    parent = await asyncio.to_thread(ct.dispatch(parent_wf, dispatcher_addr=addr))
    await _running(addr, parent, 0)
    await asyncio.to_thread(ct.cancel, parent, None, addr)
    cfg = ClientConfig(url=f"http://{addr}", token=client_config().token)
    child = "0b9e5d0e-3c1b-4d5e-9a4f-2f6a7c8d9e10"
    body = submission_parts(child_wf, (str(tmp_path / "ran"),), {}, dispatch_id=child,
                            disable_run=False)
    await asyncio.to_thread(submit_frame, cfg, body, {"parent": parent, "parent_node": 0})
    result = await asyncio.wait_for(fetched(child, addr), 10)
    assert result.status == "CANCELLED"
    assert {r["status"] for r in result.get_all_node_results()} == {"CANCELLED"}
    assert not (tmp_path / "ran").exists()
    parent_result = await asyncio.wait_for(fetched(parent, addr), 10)
    node = await asyncio.to_thread(parent_result.get_node_result, 0)  # fetches the child
    assert parent_result.status == "CANCELLED" and node["status"] == "CANCELLED"
    assert node["sublattice_result"].dispatch_id == child


async def test_disable_run_then_start_pending_once(addr: str) -> None:
    @ct.lattice
    def wf(x):
        return add(x, 1)

    dispatch_id = await asyncio.to_thread(ct.dispatch(wf, dispatcher_addr=addr, disable_run=True), 1)
    stored = await fetched(dispatch_id, addr, wait=False)
    assert stored.status == "NEW_OBJECT" and stored.get_node_result(0)["status"] == "NEW_OBJECT"
    start = ct.redispatch(dispatch_id, dispatcher_addr=addr, is_pending=True)
    assert await asyncio.to_thread(start) == dispatch_id
    with pytest.warns(UserWarning) as said:
        assert await asyncio.to_thread(start, 5) == dispatch_id  # a no-op; not new inputs
    assert ["the ones given here are ignored" in str(w.message) for w in said] == [True, False]
    assert "was started already" in str(said[1].message)
    result = await fetched(dispatch_id, addr)
    assert result.result == 2
    starts = [r for r in result.get_all_node_results() if r["node_name"] == "add"]
    assert len(starts) == 1 and starts[0]["status"] == "COMPLETED"
    with pytest.warns(UserWarning, match="was started already.*nothing new runs"):
        assert await asyncio.to_thread(start) == dispatch_id  # ended: said, not silent


@ct.electron
def counted(path, x):
    import pathlib

    p = pathlib.Path(path)
    p.write_text(p.read_text() + "x" if p.exists() else "x")
    print("counted", x)
    return x * 10


@ct.electron
def plus_one(x):
    return x + 1


@ct.electron
def plus_two(x):
    return x + 2


async def test_starting_a_pending_dispatch_eight_times_at_once_runs_it_once(
        dispatcher, addr: str, tmp_path) -> None:
    runs = tmp_path / "runs"

    @ct.lattice
    def wf():
        return mark(str(runs), 7)

    dispatch_id = await asyncio.to_thread(ct.dispatch(wf, dispatcher_addr=addr, disable_run=True))
    answers = await asyncio.gather(*[
        dispatcher.post(f"/api/v1/dispatches/{dispatch_id}/start", headers=JSON) for _ in range(8)])
    bodies = [await a.json() for a in answers]
    assert [b["dispatch_id"] for b in bodies] == [dispatch_id] * 8
    assert sum(b["started"] for b in bodies) == 1
    result = await fetched(dispatch_id, addr)
    assert result.result == 7
    assert len(runs.read_text().splitlines()) == 1


async def test_redispatch_warns_of_replace_electrons_names_no_electron_has(addr: str) -> None:
    # A typo, or an electron called only inside a sublattice: Covalent ignores the name, the
    # old function runs and the result looks right. Still ignored (scripts go on), but said.
    @ct.lattice
    def flat(x):
        return add(x, 1)

    @ct.lattice
    def outer(x):
        return inner(x)

    flat_id = (await run(flat, addr, 3)).dispatch_id
    with pytest.warns(UserWarning) as said:
        again = await asyncio.to_thread(ct.redispatch(
            flat_id, dispatcher_addr=addr, replace_electrons={"ad": identity, "add": add}))
    assert (await fetched(again, addr)).result == 4  # the old function ran: nothing replaced
    [text] = [str(w.message) for w in said]
    assert "no electron named 'ad'" in text and "its electrons: add" in text
    assert "'add'" not in text.split("(its")[0]  # the name that matched is not listed

    outer_id = (await run(outer, addr, 2)).dispatch_id
    with pytest.warns(UserWarning, match=r"'add'.*inside a\s+sublattice"):
        await asyncio.to_thread(ct.redispatch(
            outer_id, dispatcher_addr=addr, replace_electrons={"add": identity}))


async def test_redispatch_new_inputs_replace_and_reuse(addr: str, tmp_path) -> None:
    runs = tmp_path / "runs"

    @ct.lattice
    def wf(x):
        return plus_one(counted(str(runs), x))

    first = await run(wf, addr, 1)
    assert first.result == 11 and runs.read_text() == "x"

    same = await asyncio.to_thread(ct.redispatch(first.dispatch_id, dispatcher_addr=addr))
    assert same != first.dispatch_id
    again = await fetched(same, addr)
    assert again.result == 11 and runs.read_text() == "xx"  # no reuse: ran again

    new_input = await asyncio.to_thread(ct.redispatch(first.dispatch_id, dispatcher_addr=addr), 2)
    assert (await fetched(new_input, addr)).result == 21

    reused = await asyncio.to_thread(ct.redispatch(
        first.dispatch_id, dispatcher_addr=addr, reuse_previous_results=True,
        replace_electrons={"plus_one": plus_two}))
    result = await fetched(reused, addr)
    assert result.result == 12                      # plus_one replaced by plus_two
    assert runs.read_text() == "xxx"                # counted ran for input 2 only, not again
    node = result.get_node_result(0)
    assert node["output"] == 10 and node["status"] == "COMPLETED"
    assert node["start_time"] == node["end_time"]   # did not run: shown as Covalent shows it (#12)
    assert node["stdout"] == "counted 1\n"         # what it printed when it did, as in Covalent
    assert node["start_time"] >= first.end_time
    assert await _reused_from(addr, reused, 0) == first.dispatch_id
    assert await _reused_from(addr, reused, 3) is None  # plus_two ran

    # reusing a reuse: the output still comes from the dispatch that computed it
    chained = await asyncio.to_thread(ct.redispatch(
        reused, dispatcher_addr=addr, reuse_previous_results=True))
    assert (await fetched(chained, addr)).result == 12 and runs.read_text() == "xxx"
    assert await _reused_from(addr, chained, 0) == first.dispatch_id
    assert await _reused_from(addr, chained, 3) == reused


@ct.lattice
def _lists_of_reusable_parts(n):
    parts = [add(i, 1) for i in range(n)]
    return multiply(sum_of(parts), 2), parts


@ct.electron
def sum_of(xs):
    return sum(xs)


async def test_a_redispatch_that_reuses_every_part_shows_its_lists_completed_with_times(
        addr: str) -> None:
    first = await run(_lists_of_reusable_parts, addr, 3)
    again = await asyncio.to_thread(ct.redispatch(
        first.dispatch_id, dispatcher_addr=addr, reuse_previous_results=True))
    result = await fetched(again, addr)
    assert result.result == [12, [1, 2, 3]]  # a tuple returned is a list, as in Covalent
    nodes = [result.get_node_result(i) for i in range(len(first.get_all_node_outputs()))]
    lists = [n for n in nodes if n["node_name"].startswith(":electron_list:")]
    assert len(lists) == 1
    for node in nodes:  # the list, gathered from reused parts, included (it had no times)
        assert node["status"] == "COMPLETED", node
        assert node["start_time"] is not None and node["end_time"] is not None, node
        assert result.start_time <= node["start_time"] <= node["end_time"] <= result.end_time


async def test_a_reused_sublattice_node_gives_the_child_dispatch_that_computed_it(
        addr: str) -> None:
    @ct.lattice
    def wf(x):
        return inner(add(x, 1))

    first = await run(wf, addr, 2)
    ran = await asyncio.to_thread(first.get_node_result, 3)
    assert ran["node_name"] == ":sublattice:inner"
    again = await asyncio.to_thread(ct.redispatch(
        first.dispatch_id, dispatcher_addr=addr, reuse_previous_results=True))
    result = await fetched(again, addr)
    assert result.result == [3, 4, 5]
    node = await asyncio.to_thread(result.get_node_result, 3)
    assert node["start_time"] == node["end_time"]  # reused, it did not run
    child = node["sublattice_result"]  # was None
    assert child is not None and child.dispatch_id == ran["sublattice_result"].dispatch_id
    assert child.result == [3, 4, 5]

    # the dispatch it was reused from deleted, with its child: the node has no child to show
    from covalent import api

    cfg = api.client_config(addr)
    out = await asyncio.to_thread(api.request_json, cfg, "DELETE",
                                  f"/dispatches/{first.dispatch_id}")
    assert out["deleted"]
    later = await fetched(again, addr)
    node = await asyncio.to_thread(later.get_node_result, 3)
    assert node["output"] == [3, 4, 5] and node["sublattice_result"] is None


async def _reused_from(addr: str, dispatch_id: str, node_id: int) -> str | None:
    from covalent import api

    def get() -> str | None:
        node = api.request_json(api.client_config(addr), "GET",
                                f"/dispatches/{dispatch_id}/nodes/{node_id}")
        return node["reused_from"]  # type: ignore[no-any-return]

    return await asyncio.to_thread(get)


@ct.lattice
def _parent_and_child(x):
    first = block(x)  # node 0, held until tasks.release is set
    identity(first)  # node 2
    return 1


async def test_cancelling_a_task_lets_what_feeds_it_finish(addr: str) -> None:
    # Covalent's test_cancel_task: the cancelled node's running parent still completes, and
    # the dispatch ends CANCELLED only after it (Dask would release the parent with its child).
    dispatch_id = await asyncio.to_thread(ct.dispatch(_parent_and_child, dispatcher_addr=addr), 3)
    await _running(addr, dispatch_id, 0)
    await asyncio.to_thread(ct.cancel, dispatch_id, [2], addr)
    status = await asyncio.to_thread(ct.get_result, dispatch_id, False, addr, True)
    assert status["status"] == "RUNNING"  # still waiting for node 0
    tasks.release.set()
    result = await asyncio.wait_for(fetched(dispatch_id, addr), 5)
    assert result.status == "CANCELLED"
    assert result.get_node_result(0)["status"] == "COMPLETED"
    assert result.get_node_result(0)["output"] == 3
    assert result.get_node_result(2)["status"] == "CANCELLED"


@ct.lattice
def _ends_then_spins(path, marker):
    return spin(mark(path, marker))  # node 0 ends; node 3 starts on its output at once


async def test_a_cancel_that_comes_as_a_node_ends_stops_what_it_started(
        dispatcher: Any, addr: str, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A cancel of node 0 that reaches the dispatcher after node 0 ended on its worker, but
    # before its outcome did (held back here, as a busy network or scheduler would): Dask
    # started node 3 on node 0's output already. Node 0 is recorded as it ended (COMPLETED,
    # with its output), node 3 is stopped and CANCELLED; never a node that started below a
    # CANCELLED one (the CI's kill example: node 0 CANCELLED, its child had run).
    runner = dispatcher.app[RUNNER]
    held: list[tuple[str, Any]] = []
    real = runner._dispatch_event

    def holding(topic: str, msg: Any) -> None:
        if not held and topic == OUTCOME_TOPIC and unpack_outcome(msg)["n"] == 0:
            held.append((topic, msg))
            return
        real(topic, msg)

    monkeypatch.setattr(runner, "_dispatch_event", holding)
    ledger, marker = tmp_path / "runs", tmp_path / "stopped"
    dispatch_id = await asyncio.to_thread(
        ct.dispatch(_ends_then_spins, dispatcher_addr=addr), str(ledger), str(marker))
    await _running(addr, dispatch_id, 3)  # node 3 runs: node 0 ended, its outcome is held
    assert held and runner.runs[dispatch_id].machine.phase[0] in OPEN
    cancel = asyncio.create_task(asyncio.to_thread(ct.cancel, dispatch_id, [0], addr))
    await wait_until(lambda: dispatch_id in interrupts.cancelled, timeout=5)  # workers told
    runner._deliver(*held[0])  # node 0's outcome arrives after the cancel began
    await asyncio.wait_for(cancel, 15)
    await wait_until(marker.exists, timeout=5)  # node 3 really stopped
    result = await asyncio.wait_for(fetched(dispatch_id, addr), 10)
    assert result.status == "CANCELLED"
    assert result.get_node_result(0)["status"] == "COMPLETED"
    assert result.get_node_result(0)["output"] == str(marker)
    assert result.get_node_result(3)["status"] == "CANCELLED"
    assert len(ledger.read_text().splitlines()) == 1


@ct.lattice
def _one_mark(path):
    return mark(path, 5)


async def test_a_node_whose_outcome_never_comes_runs_again(
        dispatcher: Any, addr: str, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The outcome of node 0 (a sink) is lost: its task is in Dask's memory, its future ended,
    # and the dispatcher never hears how. Once it has asked twice and found it ended and
    # unheard, the node runs again (at least once) and the dispatch ends, never stuck RUNNING
    # (a kill example under load: a sink below a parent Dask recomputed without its output).
    runner = dispatcher.app[RUNNER]
    lost: list[Any] = []
    real = runner._dispatch_event

    def losing(topic: str, msg: Any) -> None:
        if not lost and topic == OUTCOME_TOPIC and unpack_outcome(msg)["n"] == 0:
            lost.append(msg)
            return
        real(topic, msg)

    monkeypatch.setattr(runner, "_dispatch_event", losing)
    monkeypatch.setattr(worker_interrupts, "RECENT_S", 0.2)  # what workers say ended a moment ago
    ledger = tmp_path / "runs"
    dispatch_id = await asyncio.to_thread(ct.dispatch(_one_mark, dispatcher_addr=addr), str(ledger))
    result = await asyncio.wait_for(fetched(dispatch_id, addr), 20)
    assert lost
    assert result.status == "COMPLETED" and result.result == 5
    assert result.get_node_result(0)["status"] == "COMPLETED"
    assert len(ledger.read_text().splitlines()) == 2  # ran again


@ct.lattice
def _one_blocker():
    return block(1)


async def test_a_cancel_during_a_resume_cancels_the_run_it_started(
        dispatcher: Any, addr: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # After a restart a dispatch is RUNNING on disk and resumed in the background; a cancel
    # that comes while the resume has read its records but not yet put its run here must not
    # cancel the stored records under it (the resumed run would go on, RUNNING, in a dispatch
    # recorded CANCELLED): it waits for the resume, then cancels the run.
    runner, store = dispatcher.app[RUNNER], dispatcher.app[STORE]
    dispatch_id = await asyncio.to_thread(ct.dispatch(_one_blocker, dispatcher_addr=addr))
    await _running(addr, dispatch_id, 0)
    runner.lose(dispatch_id)  # as a restart forgets it: RUNNING on disk, not running here
    reading, go = asyncio.Event(), asyncio.Event()
    real = dispatches.presets

    async def slow_presets(*args: Any) -> Any:  # the resume, once it has read the nodes
        reading.set()
        await go.wait()
        return await real(*args)

    monkeypatch.setattr(dispatches, "presets", slow_presets)
    resume = asyncio.create_task(dispatches.resume(store, runner, dispatch_id))
    await asyncio.wait_for(reading.wait(), 10)
    cancel = asyncio.create_task(asyncio.to_thread(ct.cancel, dispatch_id, None, addr))
    # Without the lock the cancel ends here, on the stored records; with it, it waits.
    await asyncio.wait({cancel}, timeout=1.0)
    go.set()
    assert await asyncio.wait_for(resume, 10) is True
    await asyncio.wait_for(cancel, 15)
    await wait_until(lambda: dispatch_id not in runner.runs, timeout=10)
    result = await asyncio.wait_for(fetched(dispatch_id, addr), 10)
    assert result.status == "CANCELLED"
    assert result.get_node_result(0)["status"] == "CANCELLED"  # block(1); node 1: its parameter
    assert {str(n["status"]) for n in result.get_all_node_results()} <= {"COMPLETED", "CANCELLED"}


@ct.lattice
def _fan_of_identities(n):
    return [identity(i) for i in range(n)]


async def test_a_lease_lost_while_chunks_are_sent_stops_them_and_keeps_nothing(
        dispatcher: Any, addr: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A replica that loses a dispatch's lease while a large graph still goes to Dask in chunks
    # stops sending, and holds none of the futures it got (the next owner finds what runs;
    # nobody's run would ever let them go). Then the dispatch resumes and completes.
    from dispatcher import runner as runner_module
    from dispatcher.dask_graph import CHUNKS_ENV

    runner = dispatcher.app[RUNNER]
    monkeypatch.setenv(CHUNKS_ENV, "3,1")  # 8 tasks: chunks of 1, 2, 4, 1
    real, sent, lost = runner_module.submit_chunked, [], []

    def losing_midway(*args: Any, into: Any, stop: Any, **kwargs: Any) -> None:
        dispatch_id = args[3][:36]  # the graph's name starts with the dispatch's id

        def stop_or_lose() -> bool:
            if not lost:
                lost.append(dispatch_id)
                runner.lose(dispatch_id)  # as a replica whose lease has just gone
            return bool(stop())

        real(*args, into=into, stop=stop_or_lose, **kwargs)
        sent.append(into.chunks)

    monkeypatch.setattr(runner_module, "submit_chunked", losing_midway)
    dispatch_id = await asyncio.to_thread(ct.dispatch(_fan_of_identities, dispatcher_addr=addr), 8)
    await wait_until(lambda: sent, timeout=10)
    assert lost == [dispatch_id] and sent == [1]  # the first chunk, then no more
    assert dispatch_id not in runner.runs

    def scheduler_keys(dask_scheduler: Any) -> list[str]:
        return [str(k) for k in dask_scheduler.tasks]

    async def let_go() -> bool:
        keys = await runner.client.run_on_scheduler(scheduler_keys)
        return not [k for k in keys if dispatch_id in k]

    await wait_until(let_go, timeout=10)  # no future of it is kept by anyone
    assert await dispatches.resume(dispatcher.app[STORE], runner, dispatch_id) is True
    result = await asyncio.wait_for(fetched(dispatch_id, addr), 30)
    assert (result.status, result.result) == ("COMPLETED", list(range(8)))
    assert sent == [1, 4]  # the resumed run sent all four chunks


@ct.lattice
def _two_blockers():
    return block(1), block(2)


@ct.lattice
def _queued_parent_and_child(path):
    first = mark(path, 3)  # node 0 (1 and 2: its parameters): queued behind the blockers
    identity(first)  # node 3
    return 1


async def test_a_stored_graph_is_parsed_and_hashed_off_the_loop(
        dispatcher: Any, addr: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A resume, a takeover and a redispatch read a stored graph: seconds at 100,000 nodes
    (over 10 on a loaded machine), which on the loop stalled every request and let the
    server's own leases lapse, again at each takeover (the 100k restart test in CI)."""
    dispatch_id = await asyncio.to_thread(ct.dispatch(_fan_of_identities, dispatcher_addr=addr), 150)
    assert (await fetched(dispatch_id, addr)).result == list(range(150))
    store = dispatcher.app[STORE]
    loop_thread, threads = threading.get_ident(), []
    real_loads, real_signatures = pieces.loads, reuse.signatures

    def loads(text: str) -> Any:
        threads.append(("parse", threading.get_ident()))
        return real_loads(text)

    def signatures(graph: Any, refs: list[str]) -> list[str]:
        threads.append(("hash", threading.get_ident()))
        return real_signatures(graph, refs)

    monkeypatch.setattr(pieces, "loads", loads)
    monkeypatch.setattr(reuse, "signatures", signatures)
    row = await store.get_dispatch(dispatch_id)
    graph, _ = await dispatches.load_graph(store, row)
    reused = await reuse.reusable_outputs(store, graph, row.blob_refs, dispatch_id)
    assert len(reused) == 300  # every electron and parameter, nothing gathered
    assert sorted(what for what, _ in threads) == ["hash", "hash", "parse", "parse"]
    assert loop_thread not in {thread for _, thread in threads}


async def test_a_parent_dask_released_before_it_started_runs_in_a_later_round(
        addr: str, tmp_path) -> None:
    # Cancelling node 3 drops its future, so Dask releases node 0, which never started (both
    # worker threads are busy). The dispatch's machine finds it runs nowhere and submits it
    # again; it runs once, and the dispatch ends CANCELLED with its output (#20).
    blockers = await asyncio.to_thread(ct.dispatch(_two_blockers, dispatcher_addr=addr))
    await _running(addr, blockers, 0)
    await _running(addr, blockers, 2)
    ledger = tmp_path / "runs"
    dispatch_id = await asyncio.to_thread(
        ct.dispatch(_queued_parent_and_child, dispatcher_addr=addr), str(ledger))
    await asyncio.to_thread(ct.cancel, dispatch_id, [3], addr)
    status = await asyncio.to_thread(ct.get_result, dispatch_id, False, addr, True)
    assert status["status"] == "RUNNING"  # node 0 has not run yet
    tasks.release.set()
    result = await asyncio.wait_for(fetched(dispatch_id, addr), 10)
    assert result.status == "CANCELLED"
    assert result.get_node_result(0)["status"] == "COMPLETED"
    assert result.get_node_result(0)["output"] == 3
    assert result.get_node_result(3)["status"] == "CANCELLED"
    assert len(ledger.read_text().splitlines()) == 1  # ran once


_LEFT_RUNNING: list = []  # the hook's Popen objects (not collected while they run)


def _start_background(pidfile: str) -> None:
    """A call_before hook that leaves a process running (the node's own, until it ends)."""
    import subprocess

    _LEFT_RUNNING.append(subprocess.Popen(["bash", "-c", f"sleep 300 & echo $! > {pidfile}; wait"]))


def _alive(pidfile) -> bool:
    import psutil

    if not pidfile.exists() or not pidfile.read_text().strip():
        return False
    try:
        return psutil.Process(int(pidfile.read_text())).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def test_cancel_stops_every_process_a_node_started(addr: str, tmp_path) -> None:
    # #20 item 3: a cancelled node's deps_bash command, and a process its call_before hook
    # left running, are killed with their children, not left to run to the end.
    in_deps, in_hook = tmp_path / "deps.pid", tmp_path / "hook.pid"

    @ct.electron(deps_bash=[f"echo $$ > {in_deps}; exec sleep 300"])
    def stuck_in_deps(x):
        return x

    @ct.electron(call_before=[ct.DepsCall(_start_background, args=[str(in_hook)])])
    def busy(x):
        import time

        while True:  # pure Python: the interrupt stops it
            time.sleep(0.01)

    @ct.lattice
    def wf():
        return stuck_in_deps(1), busy(2)

    dispatch_id = await asyncio.to_thread(ct.dispatch(wf, dispatcher_addr=addr))
    await wait_until(lambda: _alive(in_deps) and _alive(in_hook), timeout=20)
    await asyncio.to_thread(ct.cancel, dispatch_id, None, addr)
    result = await asyncio.wait_for(fetched(dispatch_id, addr), 10)
    assert result.status == "CANCELLED"
    await wait_until(lambda: not _alive(in_deps) and not _alive(in_hook), timeout=10)
    for proc in _LEFT_RUNNING:  # the hook's own bash was killed with it: reap it
        assert proc.wait(timeout=5) == -9
    _LEFT_RUNNING.clear()


async def test_a_time_limit_stops_the_processes_of_its_node(addr: str, tmp_path) -> None:
    pidfile = tmp_path / "deps.pid"

    @ct.electron(deps_bash=[f"echo $$ > {pidfile}; exec sleep 300"],
                 executor=ct.executor.DaskExecutor(time_limit=1))
    def slow(x):
        return x

    @ct.lattice
    def wf():
        return slow(1)

    dispatch_id = await asyncio.to_thread(ct.dispatch(wf, dispatcher_addr=addr))
    result = await asyncio.wait_for(fetched(dispatch_id, addr), 20)
    assert result.status == "FAILED"
    assert "TimeLimitExceeded" in result.get_node_result(0)["error"]
    await wait_until(lambda: not _alive(pidfile), timeout=10)


async def test_a_sublattice_past_its_time_limit_fails_and_cancels_its_child(
        addr: str, tmp_path) -> None:
    """A sublattice node with a time limit stops waiting for its child at the limit, fails
    with the limit's error, and cancels its child, whose electron stops rather than run on for
    nobody; the worker's thread is free. (Its wait used to block up to 30 s in a socket read
    that no interrupt reaches: the watchdog gave up on the node after its grace, which on a
    worker with a nanny restarts the worker, and the child ran on, RUNNING.)"""
    marker = tmp_path / "stopped"

    @ct.lattice
    def forever(path):
        return spin(path)

    limited = ct.electron(forever, executor=ct.executor.DaskExecutor(time_limit=1))

    @ct.lattice
    def wf(path):
        return limited(path)

    dispatch_id = await asyncio.to_thread(ct.dispatch(wf, dispatcher_addr=addr), str(marker))
    result = await asyncio.wait_for(fetched(dispatch_id, addr), 20)
    assert result.status == "FAILED"
    node = await asyncio.to_thread(result.get_node_result, 0)  # fetches the child: off the loop
    assert node["status"] == "FAILED" and "TimeLimitExceeded" in node["error"], node["error"]
    child = node["sublattice_result"]
    assert child is not None and child.status == "CANCELLED"
    await wait_until(lambda: marker.exists(), timeout=10)  # the child's electron was stopped
    assert marker.read_text() == "stopped"
    after = await run(_identity_wf, addr, 3)  # every worker thread is free again
    assert after.status == "COMPLETED" and after.result == 3


@ct.lattice
def _identity_wf(x):
    return identity(x)


@ct.electron
def squares_through_worker_client(n):
    from distributed import get_worker, worker_client

    from dispatcher.worker.pool import PoolGuard

    with worker_client() as client:  # leaves the worker's pool, and rejoins it at the end
        total = sum(client.gather(client.map(lambda i: i * i, range(n), pure=False)))
    return total, PoolGuard.name in get_worker().plugins


async def test_an_electron_may_use_dasks_worker_client_on_a_guarded_worker(addr: str) -> None:
    """User code that secedes and rejoins (``worker_client``) runs, on a worker whose pool the
    dispatcher guards: a cancel landing as it rejoins costs the worker no thread
    (tests/dispatcher/test_interrupts.py shows that moment)."""
    @ct.lattice
    def wf(n):
        return squares_through_worker_client(n)

    result = await run(wf, addr, 4)
    assert result.status == "COMPLETED", result.error
    assert result.result == (14, True)  # 0 + 1 + 4 + 9, and the guard is on its worker


REUSING_SCRIPT = """
import sys
import covalent as ct

@ct.electron
def total(d):
    return d["total"]

@ct.electron
def a(x):
    y = {"a": x, "b": "total"}
    return y["a"]

@ct.lattice
def wf(d):
    return a(total(d))

addr = sys.argv[1]
first = ct.dispatch_sync(wf, dispatcher_addr=addr)({"total": 3})
again = ct.redispatch(first.dispatch_id, dispatcher_addr=addr, reuse_previous_results=True)()
print(first.dispatch_id, again, ct.get_result(again, wait=True, dispatcher_addr=addr).result)
"""


async def test_a_redispatch_reuses_the_functions_of_a_script(addr: str, tmp_path: Path) -> None:
    # A script's functions (__main__) travel by value. The redispatch pickles them again from
    # the stored lattice, and a function whose code holds a string equal to a name it uses
    # ("total", "a") pickled to other bytes the second time: nothing was reused.
    script = tmp_path / "reusing.py"
    script.write_text(REUSING_SCRIPT)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), addr, cwd=tmp_path, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=dict(os.environ, PYTHONPATH=str(REPO)))
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    first, again, value = out.decode().split()
    assert value == "3"
    result = await fetched(again, addr)
    electrons = [n for n in range(len(result.get_all_node_outputs()))
                 if result.get_node_result(n)["node_name"] in ("total", "a")]
    assert len(electrons) == 2
    assert [await _reused_from(addr, again, n) for n in electrons] == [first] * 2
