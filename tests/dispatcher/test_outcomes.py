"""How a node's outcome reaches the dispatcher (``dispatcher.outcomes``), on a real scheduler,
worker and client in this process, talking over TCP as a separate scheduler process would.

What the runner relies on: a task's outcome reaches the subscribed client before the task's
completion does, and a task the scheduler released while it ran still reports its outcome.
And what issue #23 is about: a completed task costs no message of its own for its outcome.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
from dask.task_spec import List, Task, TaskRef
from distributed import Client, Scheduler, Worker

from dispatcher.outcomes import BATCH_TOPIC, META, OutcomeCarrier, OutcomeRelay, report
from dispatcher.protocol import OUTCOME_TOPIC, unpack_outcome
from tests.conftest import wait_until

_GATE = threading.Event()


def _ends(n: int) -> int:
    report({"n": n, "s": "COMPLETED", "worker": "tcp://forged:1"}, final=True)
    return n


def _reports_then_waits(n: int) -> int:
    report({"n": n, "s": "COMPLETED"}, final=True)
    _GATE.wait(30)
    return n


def _gated_sum(n: int, parts: list[int]) -> int:
    report({"n": n, "s": "COMPLETED"}, final=True)
    _GATE.wait(30)
    return sum(parts)


def _retries(n: int) -> int:
    report({"n": n, "s": "RETRYING"}, final=False)
    report({"n": n, "s": "COMPLETED"}, final=True)
    return n


class Heard:
    """What a subscribed client hears: outcomes, one at a time or in batches, in order."""

    def __init__(self, client: Client) -> None:
        self.outcomes: list[dict[str, Any]] = []
        self.single: list[dict[str, Any]] = []  # what came as an event of its own
        self.batches: list[int] = []
        client.subscribe_topic(BATCH_TOPIC, self._batch)
        client.subscribe_topic(OUTCOME_TOPIC, self._one)

    def _batch(self, ev: tuple[float, list[dict[str, Any]]]) -> None:
        self.batches.append(len(ev[1]))
        self.outcomes += map(unpack_outcome, ev[1])

    def _one(self, ev: tuple[float, dict[str, Any]]) -> None:
        event = unpack_outcome(ev[1])
        self.single.append(event)
        self.outcomes.append(event)

    def nodes(self) -> list[int]:
        return [o["n"] for o in self.outcomes]


@pytest.fixture
async def cluster() -> AsyncIterator[tuple[Scheduler, Worker, Client]]:
    _GATE.clear()
    async with Scheduler(host="127.0.0.1", dashboard_address="127.0.0.1:0") as s, \
            Worker(s.address, host="127.0.0.1", nthreads=2) as w, \
            Client(s.address, asynchronous=True, set_as_default=False) as c:
        try:
            yield s, w, c
        finally:
            _GATE.set()


async def _relayed(c: Client, interval: float) -> Heard:
    heard = Heard(c)
    await c.register_plugin(OutcomeRelay(interval=interval), name=OutcomeRelay.name)
    await c.register_plugin(OutcomeCarrier(), name=OutcomeCarrier.name)
    return heard


async def test_an_outcome_rides_in_its_task_completion_and_arrives_first(
        cluster: tuple[Scheduler, Worker, Client]) -> None:
    s, w, c = cluster
    # A relay that would hold outcomes for a minute: each still arrives before its task's
    # completion, since anything else the scheduler sends the client flushes them first.
    heard = await _relayed(c, interval=60.0)
    for n in range(20):
        assert await c.submit(_ends, n, key=f"t-{n}") == n
        assert heard.nodes() == list(range(n + 1))  # already there when the future is done
    assert heard.single == []  # no outcome travelled as an event of its own
    # each names the worker it came from as the scheduler knows it, never as it said itself
    assert {o["worker"] for o in heard.outcomes} == {w.address}
    assert s.get_events(OUTCOME_TOPIC) == ()
    # the relayed batches stay in the scheduler's event log, for a replica taking over
    kept = [unpack_outcome(o)["n"] for _, batch in s.get_events(BATCH_TOPIC) for o in batch]
    assert kept == list(range(20))


async def test_outcomes_relayed_after_their_listener_died_are_kept_for_the_next(
        cluster: tuple[Scheduler, Worker, Client]) -> None:
    """A replica killed between its tasks' completions and the relay's flush: the outcomes it
    was never sent are in the scheduler's event log for the replica that takes over."""
    s, w, _ = cluster
    async with Client(s.address, asynchronous=True, set_as_default=False) as owner:
        await _relayed(owner, interval=60.0)  # would hold them for a minute
        relay = s.plugins[OutcomeRelay.name]
        # As the runner submits: a future for the sink only, which waits at the gate.
        dsk: dict[Any, Any] = {("b", i): Task(("b", i), _ends, i) for i in range(5)}
        dsk["sink"] = Task("sink", _gated_sum, 99, List(*(TaskRef(("b", i)) for i in range(5))))
        sink = owner.get(dsk, "sink", sync=False)
        await wait_until(lambda: len(relay.buffer) == 5  # ended, not relayed yet
                         and (ts := w.state.tasks.get("sink")) is not None
                         and ts.state == "executing")  # the sink waits at the gate
        assert s.get_events(BATCH_TOPIC) == ()
        del sink
    # the owner is gone: once the worker has heard its sink was released, the sink ends
    # (reported as an event, with no completion to ride in)
    await wait_until(lambda: (ts := w.state.tasks.get("sink")) is None or ts.state == "cancelled")
    _GATE.set()
    await wait_until(lambda: len(s.get_events(OUTCOME_TOPIC)) == 1, timeout=30)
    relay.flush()  # the timer's work, without waiting a minute
    kept = [unpack_outcome(o)["n"] for _, batch in s.get_events(BATCH_TOPIC) for o in batch]
    assert sorted(kept) == list(range(5))
    assert unpack_outcome(s.get_events(OUTCOME_TOPIC)[0][1])["n"] == 99


async def test_the_outcomes_of_a_burst_travel_together(
        cluster: tuple[Scheduler, Worker, Client]) -> None:
    _, _, c = cluster
    heard = await _relayed(c, interval=0.05)
    # As the runner does: a future for the sink only (a future per task would flush per task).
    dsk: dict[Any, Any] = {("b", i): Task(("b", i), _ends, i) for i in range(200)}
    dsk["sum"] = Task("sum", sum, List(*(TaskRef(("b", i)) for i in range(200))))
    assert await c.get(dsk, "sum", sync=False) == sum(range(200))
    assert sorted(heard.nodes()) == list(range(200))
    assert sum(heard.batches) == 200 and len(heard.batches) < 100


async def test_a_task_released_while_it_ran_still_reports(
        cluster: tuple[Scheduler, Worker, Client]) -> None:
    s, w, c = cluster
    heard = await _relayed(c, interval=0.01)
    future = c.submit(_reports_then_waits, 7, key="released")
    await wait_until(lambda: (ts := w.state.tasks.get("released")) is not None
                     and META in ts.metadata)  # carried, not sent yet
    await c.cancel([future])  # the scheduler releases it; the worker's thread runs on
    await wait_until(lambda: w.state.tasks["released"].state == "cancelled")
    _GATE.set()
    await wait_until(lambda: heard.nodes() == [7])
    # as an event (no task-finished took it), from the worker the scheduler knows
    assert heard.single == [{"n": 7, "s": "COMPLETED", "worker": w.address}]
    assert "released" not in s.tasks


async def test_a_retried_attempt_is_an_event_and_the_last_rides_with_the_task(
        cluster: tuple[Scheduler, Worker, Client]) -> None:
    _, w, c = cluster
    heard = await _relayed(c, interval=60.0)
    assert await c.submit(_retries, 3, key="retried") == 3
    assert [(o["s"], o["worker"]) for o in heard.outcomes] == [("RETRYING", w.address),
                                                              ("COMPLETED", w.address)]
    assert heard.single == [{"n": 3, "s": "RETRYING", "worker": w.address}]


async def test_without_a_carrier_outcomes_are_events(
        cluster: tuple[Scheduler, Worker, Client]) -> None:
    """A scheduler that would not take the relay: the runner registers no carrier, and every
    outcome travels as an event of its own, as before."""
    s, w, c = cluster
    heard = Heard(c)
    assert await c.submit(_ends, 1, key="plain") == 1
    await wait_until(lambda: heard.nodes() == [1])
    assert heard.single == [{"n": 1, "s": "COMPLETED", "worker": w.address}]
    assert len(s.get_events(OUTCOME_TOPIC)) == 1
