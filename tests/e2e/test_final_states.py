"""Randomized end-to-end property tests: whatever happens, a finished dispatch tells the truth.

Random workflows (fan-ins, electron lists, sublattices; failing, retried and slow steps) run on
a real dispatcher process with two worker processes, with a random cancel (whole or partial) at
a random moment, and in the slower subset a worker killed or the dispatcher killed (-9) and
restarted. Each step keeps a side-effect ledger (``tests/randomized.py``). Once the dispatch is
final, what the SDK, the REST API and the web UI's JSON say is checked against a plain-Python
evaluation of the same workflow (#20):

- the final status: FAILED if a node failed, else CANCELLED if a cancel stopped a node (a whole
  cancel always does: the result node at least), else COMPLETED;
- no node RUNNING (nor in a sublattice's dispatch);
- fail-slow: every node that does not descend from a failed or cancelled node ran to its end,
  exactly once (without kills), with the value the plain evaluation gives;
- nothing downstream of a failed or cancelled node started; a failed node was meant to fail;
- the three views agree. ``:postprocess:reconstruct`` completes with its dispatch.

CI runs a bounded number of examples; before resolving a change to how nodes run, fail,
cancel or get recorded, run many more: ``COVALENT_E2E_EXAMPLES=300 python -m pytest
tests/e2e/test_final_states.py``. A failing example is kept below with ``@example``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, example, given, note, settings
from hypothesis import strategies as st

import covalent as ct
from covalent.errors import CovalentError
from tests.faults.conftest import ServerProcess, Shared
from tests.randomized import retried_step, step, sub, value_of

EXAMPLES = int(os.environ.get("COVALENT_E2E_EXAMPLES", 20))
KILL_EXAMPLES = int(os.environ.get("COVALENT_E2E_KILL_EXAMPLES", max(3, EXAMPLES // 5)))
CODES = {"NEW_OBJECT": "N", "RUNNING": "R", "COMPLETED": "C", "FAILED": "F", "CANCELLED": "X"}
ELECTRONS = {"step": step, "retried": retried_step, "sub": sub}


@dataclass(frozen=True)
class Step:
    kind: str  # step, retried (one retry), sub (a sublattice running one step)
    parents: tuple[int, ...]
    gather: bool  # the parents' outputs reach it as one list
    behaviour: str  # ok, fail, flaky (fails its first attempt)
    delay: float


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]
    result: tuple[int, ...] | None  # the steps the lattice returns (None: it returns nothing)
    cancel: tuple[str, int, float] | None  # (whole | partial, step, seconds after dispatch)
    kill: tuple[str, float] | None = None  # (worker | dispatcher, seconds after dispatch)


@st.composite
def plans(draw: st.DrawFn, kills: bool = False, cancels: bool = False) -> Plan:
    """A random plan; ``cancels``: always with a cancel (else one plan in three has one)."""
    steps: list[Step] = []
    for i in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["step"] * 5 + ["retried", "sub"]))
        parents = tuple(draw(st.lists(st.integers(0, i - 1), max_size=3, unique=True))) if i else ()
        behaviour = draw(st.sampled_from(["ok"] * 5 + ["fail"] + (["flaky"] * 2 if kind == "retried" else [])))
        steps.append(Step(kind, parents, len(parents) > 1 and draw(st.booleans()), behaviour,
                          draw(st.sampled_from([0.0, 0.0, 0.01, 0.05, 0.3]))))
    n = len(steps)
    result = draw(st.none() | st.lists(st.integers(0, n - 1), min_size=1, max_size=3).map(tuple))
    some_cancel = st.tuples(st.sampled_from(["whole", "partial"]), st.integers(0, n - 1),
                            st.sampled_from([0.0, 0.05, 0.2, 0.5]))
    cancel = draw(some_cancel if cancels else st.none() | st.none() | some_cancel)
    kill = draw(st.tuples(st.sampled_from(["worker", "dispatcher"]),
                          st.sampled_from([0.0, 0.1, 0.3]))) if kills else None
    return Plan(tuple(steps), result, cancel, kill)


def lattice_of(plan: Plan, ledger: str) -> Any:
    def workflow() -> Any:
        outs: list[Any] = []
        for i, s in enumerate(plan.steps):
            inputs = [outs[p] for p in s.parents]
            args = [inputs] if s.gather else inputs
            outs.append(ELECTRONS[s.kind](i, ledger, s.behaviour, s.delay, *args))
        return None if plan.result is None else [outs[i] for i in plan.result]

    return ct.lattice(workflow)


def model_values(plan: Plan) -> dict[int, int]:
    """The value of every step whose inputs all exist, as plain Python computes them."""
    values: dict[int, int] = {}
    for i, s in enumerate(plan.steps):
        if s.behaviour != "fail" and all(p in values for p in s.parents):
            inputs = [values[p] for p in s.parents]
            values[i] = value_of(i, [inputs] if s.gather else inputs)
    return values


def ancestors(plan: Plan, i: int) -> set[int]:
    out: set[int] = set()
    stack = list(plan.steps[i].parents)
    while stack:
        p = stack.pop()
        if p not in out:
            out.add(p)
            stack.extend(plan.steps[p].parents)
    return out


@pytest.fixture(scope="module")
def server(store_server: Shared) -> Iterator[ServerProcess]:
    """A dispatcher (two worker processes) on the store of the run, reached by the SDK here:
    the session's shared one on SQLite (``tests/conftest.py``)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COVALENT_TOKEN", store_server.server.token)
        mp.setenv("COVALENT_CONFIG_DIR", store_server.env["COVALENT_CONFIG_DIR"])
        yield store_server.server


def _get(server: ServerProcess, path: str) -> Any:
    req = urllib.request.Request(server.url + path,
                                 headers={"Authorization": f"Bearer {server.token}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _final(server: ServerProcess, dispatch_id: str, timeout: float = 90.0) -> Any:
    """The dispatch's Result once it is final (bounded: a dispatch that never ends fails)."""
    deadline = time.monotonic() + timeout
    status: Any = None
    while True:
        try:
            status = ct.get_result(dispatch_id, dispatcher_addr=server.addr, status_only=True)
            if status["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
                return ct.get_result(dispatch_id, dispatcher_addr=server.addr)
        except CovalentError as exc:
            status = exc  # the dispatcher is restarting
        if time.monotonic() > deadline:
            raise AssertionError(f"dispatch {dispatch_id} not final after {timeout} s: {status}\n"
                                 f"{_diagnosis(server, dispatch_id)}")
        time.sleep(0.05)  # polling a dispatch of another process: nothing to wait on but its status


def _diagnosis(server: ServerProcess, dispatch_id: str) -> str:
    """What a person would look at next: the nodes' statuses and the end of the server's log."""
    try:
        nodes = _get(server, f"/ui/dispatches/{dispatch_id}/graph")["status"]
    except OSError as exc:
        nodes = exc
    log = server.log.read_text(errors="replace").splitlines()[-60:] if server.log.exists() else []
    return (f"node status codes ({CODES}): {nodes}\n"
            f"server log (last {len(log)} lines):\n" + "\n".join(log))


def _count(ledger: Path, name: str, after: float = 0.0) -> int:
    """How many lines the ledger's ``name`` has, written at ``after`` or later."""
    path = ledger / name
    return sum(float(t) >= after for t in path.read_text().split()) if path.exists() else 0


def run_plan(server: ServerProcess, plan: Plan, root: Path,
             others: tuple[ServerProcess, ...] = ()) -> None:
    """Dispatch the plan to ``server`` and check the final dispatch; with ``others`` (replicas
    on the same database), the cancel goes to the first of them, and each tells the same truth."""
    ledger = root / uuid.uuid4().hex
    ledger.mkdir()
    note(f"plan: {plan}")
    dispatch_id = ct.dispatch(lattice_of(plan, str(ledger)), dispatcher_addr=server.addr)()
    cancelled, restarted = _disturb(server, plan, dispatch_id, others[0] if others else server)
    result = _final(server, dispatch_id)
    check(server, plan, ledger, result, cancelled, restarted)
    for other in others:
        check(other, plan, ledger, _final(other, dispatch_id), cancelled, restarted)


def _disturb(server: ServerProcess, plan: Plan, dispatch_id: str,
             canceller: ServerProcess) -> tuple[bool, float]:
    """The plan's kill and cancel (sent to ``canceller``), at their moments: whether the cancel
    was taken, and when the dispatcher's killed incarnation was gone with every process it
    started (0 if none was).

    What ran before that moment may have left no record (nothing told the killed dispatcher
    about it): resuming runs it again, or a cancel stops its parents before they are recorded."""
    events = sorted(([(plan.cancel[2], "cancel")] if plan.cancel else [])
                    + ([(plan.kill[1], "kill")] if plan.kill else []))
    start, cancelled, restarted = time.monotonic(), False, 0.0
    for at, what in events:
        time.sleep(max(0.0, at - (time.monotonic() - start)))  # the fault's random moment
        if what == "kill":
            assert plan.kill is not None
            if plan.kill[0] == "worker":
                pids = server.worker_pids()
                if pids:
                    os.kill(random.choice(pids), signal.SIGKILL)
            else:
                server.kill9()  # returns once the dispatcher and its workers are gone
                restarted = time.time()
                server.start()
        else:
            assert plan.cancel is not None
            how, node, _ = plan.cancel
            try:
                ids = None if how == "whole" else [_node_id(canceller, dispatch_id, node)]
                said = ct.cancel(dispatch_id, task_ids=ids, dispatcher_addr=canceller.addr)
                cancelled = "already ended" not in said  # (said, not raised, as in Covalent)
                note(f"cancel {'taken' if cancelled else 'not taken'}: {said}")
                print(f"{dispatch_id}: cancel {'taken' if cancelled else 'not taken'}: {said}")
            except CovalentError as exc:  # ended already, or the dispatcher was down
                note(f"cancel not taken: {exc}")
                print(f"{dispatch_id}: cancel not taken: {exc}")
    return cancelled, restarted


def _step_nodes(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The nodes of the plan's steps, in plan order (node ids follow the calls)."""
    return [n for n in nodes if n["node_name"] == "step" or n["node_name"].startswith(":sublattice:")]


def _node_id(server: ServerProcess, dispatch_id: str, step_index: int) -> int:
    result = ct.get_result(dispatch_id, dispatcher_addr=server.addr, intermediate_outputs=False)
    return int(_step_nodes(result.get_all_node_results())[step_index]["node_id"])


def check(server: ServerProcess, plan: Plan, ledger: Path, result: Any, cancelled: bool,
          restarted: float = 0.0) -> None:
    nodes = result.get_all_node_results()
    statuses = [str(n["status"]) for n in nodes]
    note(f"statuses: {[(n['node_id'], n['node_name'], str(n['status'])) for n in nodes]}")
    assert "RUNNING" not in statuses
    # the REST API's records and the web UI's graph say the same
    rest = [_get(server, f"/api/v1/dispatches/{result.dispatch_id}/nodes/{i}")["status"]
            for i in range(len(nodes))]
    assert rest == statuses
    ui = _get(server, f"/ui/dispatches/{result.dispatch_id}/graph")["status"]
    assert ui == "".join(CODES[s] for s in statuses)

    by_step = {i: n for i, n in enumerate(_step_nodes(nodes))}
    assert len(by_step) == len(plan.steps)
    phase = {i: str(n["status"]) for i, n in by_step.items()}
    killed = plan.kill is not None
    values = model_values(plan)
    for i, s in enumerate(plan.steps):
        above = ancestors(plan, i)
        stopped_above = any(phase[a] in ("FAILED", "CANCELLED") for a in above)
        if stopped_above:  # never started, stays NEW_OBJECT unless a cancel reached it
            assert phase[i] in ("NEW_OBJECT", "CANCELLED"), (i, phase)
            assert _count(ledger, f"{i}.start", after=restarted) == 0, (i, "started below a failure")
            continue
        if phase[i] == "CANCELLED":
            assert cancelled, (i, "cancelled without a cancel")
            continue
        # fail-slow: it ran to its end
        assert phase[i] in ("COMPLETED", "FAILED"), (i, phase)
        if phase[i] == "FAILED":
            assert s.behaviour == "fail" or killed, (i, s, by_step[i]["error"])
        else:
            assert s.behaviour != "fail", (i, s)
            assert by_step[i]["output"] == values[i], (i, by_step[i]["output"], values[i])
            done = _count(ledger, f"{i}.done")
            assert done == 1 or killed and done >= 1, (i, done)
    for i, n in by_step.items():
        if n["node_name"].startswith(":sublattice:") and n["sublattice_result"] is not None:
            child = n["sublattice_result"]
            assert child.status in ("COMPLETED", "FAILED", "CANCELLED"), (
                f"child {child.dispatch_id} {child.status} below node {i} {n['status']}; parent "
                f"{result.status}: {result.error}\n{_diagnosis(server, child.dispatch_id)}")
            assert "RUNNING" not in [str(c["status"]) for c in child.get_all_node_results()]

    failed = "FAILED" in statuses
    stopped = "CANCELLED" in statuses  # a partial cancel of nodes that had all ended stops none
    assert cancelled or not stopped
    if cancelled and plan.cancel is not None and plan.cancel[0] == "whole" and not failed:
        assert stopped, "a whole cancel that was taken cancelled nothing"
    expected = "FAILED" if failed else "CANCELLED" if stopped else "COMPLETED"
    assert str(result.status) == expected, (result.status, expected, result.error)
    post = nodes[-1]
    assert post["node_name"] == ":postprocess:reconstruct"
    if expected == "COMPLETED":
        assert str(post["status"]) == "COMPLETED"
        want = None if plan.result is None else [values[i] for i in plan.result]
        assert result.result == want
    elif expected == "FAILED":
        assert str(post["status"]) in ("NEW_OBJECT", "CANCELLED")
    else:
        assert str(post["status"]) == "CANCELLED"


# No shrinking unless asked for (COVALENT_E2E_SHRINK=1): an example takes seconds, a dispatch that
# never ends 90 s, so shrinking one would outlast the test's timeout and hide the failure; the
# failing plan and its statuses are printed as they are.
COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                     HealthCheck.function_scoped_fixture],
              phases=list(Phase) if os.environ.get("COVALENT_E2E_SHRINK") else
              [Phase.explicit, Phase.reuse, Phase.generate])


# The thread method: a signal's exception inside Hypothesis would be taken for a failure and
# shrunk, example after example, instead of ending the test.
@pytest.mark.timeout(120 + 30 * EXAMPLES, method="thread")
@settings(max_examples=EXAMPLES, **COMMON)  # type: ignore[arg-type]
@given(plan=plans())
# Seen with Dask's stream intervals at 1 ms: the dispatch still RUNNING 90 s on, the task of
# step 1 (below the failed step 0: it only has to return) never run. An earlier example's
# cancelled sublattice node had died in ``rejoin``, leaving a worker's one-thread pool counting
# a dead thread (worker.sublattice no longer rejoins): 4 failed runs of ~20 of 200 examples
# before the fix, none of 16 after.
@example(plan=Plan((Step("step", (), False, "fail", 0.0), Step("step", (0,), False, "ok", 0.0),
                    Step("step", (), False, "ok", 0.0)), (2,), ("partial", 0, 0.2)))
def test_a_finished_dispatch_tells_the_truth(server: ServerProcess, plan: Plan,
                                             tmp_path_factory: pytest.TempPathFactory) -> None:
    run_plan(server, plan, tmp_path_factory.getbasetemp())


@pytest.mark.slow
@pytest.mark.timeout(120 + 90 * KILL_EXAMPLES, method="thread")
@settings(max_examples=KILL_EXAMPLES, **COMMON)  # type: ignore[arg-type]
@given(plan=plans(kills=True))
# Seen on a loaded machine: a cancel of step 0 as it ended (its outcome on the way, step 2
# started on its output) recorded step 0 CANCELLED above a step that had started.
@example(plan=Plan((Step("step", (), False, "ok", 0.0), Step("step", (), False, "ok", 0.0),
                    Step("step", (0,), False, "ok", 0.0), Step("step", (2, 0, 1), True, "ok", 0.0),
                    Step("step", (3, 2, 0), True, "fail", 0.0),
                    Step("step", (1, 2, 0), False, "ok", 0.0)),
                   None, ("partial", 0, 0.0), ("worker", 0.3)))
# Seen with 150 examples (flaky: it needs the sublattice node to run again on a new worker): the
# dispatcher killed at 0.3 s, sublattice node 3 ran again after the restart and sent its child
# again, pickled otherwise by the new worker; the server refused it ("taken by a different
# workflow"), node 3 FAILED and the dispatch ended FAILED with its child still RUNNING. A child
# sent again by its own node is that child (dispatches._same_as_stored).
@example(plan=Plan((Step("sub", (), False, "ok", 0.0), Step("step", (0,), False, "ok", 0.3),
                    Step("step", (1,), False, "ok", 0.3), Step("sub", (0,), False, "fail", 0.3),
                    Step("step", (2, 0), True, "fail", 0.01)),
                   (3, 1), ("partial", 2, 0.5), ("dispatcher", 0.3)))
def test_the_truth_survives_killed_workers_and_a_killed_dispatcher(
        server: ServerProcess, plan: Plan, tmp_path_factory: pytest.TempPathFactory) -> None:
    run_plan(server, plan, tmp_path_factory.getbasetemp())
