"""Dask's private API as the dispatcher uses it: fails loudly here, not in a user's dispatch,
if Dask changes it."""

from __future__ import annotations

import inspect
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from dask._expr import LLGExpr
from dask.task_spec import Task, TaskRef
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatcher.dask_graph import submit_graph


def _inc(x: int) -> int:
    return x + 1


def test_llgexpr_still_takes_a_graph_and_a_name() -> None:
    assert "_determ_token" in inspect.signature(LLGExpr).parameters
    dsk = {("a", 0): Task(("a", 0), _inc, 1)}
    expr = LLGExpr(dsk, _determ_token="named-by-us")
    assert expr._name.endswith("named-by-us") or "named-by-us" in expr._name
    assert dict(expr.__dask_graph__()) == dsk


async def test_submit_graph_runs_the_named_graph() -> None:
    from distributed import Client, LocalCluster

    from dispatcher.dask_graph import submit_graph

    # No dashboard, and the scheduler's HTTP routes on a free port: 8787 may be held by
    # another process (distributed then leaks the socket it could not bind).
    async with LocalCluster(processes=False, n_workers=1, dashboard_address=None,
                            scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
                            asynchronous=True) as cluster:
        async with Client(cluster, asynchronous=True, set_as_default=False) as client:
            dsk = {("a", 0): Task(("a", 0), _inc, 1), ("b", 0): Task(("b", 0), _inc, 41)}
            futures = submit_graph(client, dsk, [("a", 0), ("b", 0)], "g-1", priority=5)
            assert await client.gather(futures) == [2, 42]


def _where(x: int) -> tuple[int, str]:
    from distributed import get_worker

    return x, str(get_worker().name)


async def test_per_task_options_become_dask_annotations_the_scheduler_applies() -> None:
    """What submit_graph relies on: dask.annotate callables are called with each key, and the
    scheduler turns their values into restrictions and priorities (retries are the node task's
    own: a failure Dask saw would release what fail-slow must keep running)."""
    from distributed import Client, Scheduler, Worker

    from covalent.wire.executors import TaskOptions
    from dispatcher.dask_graph import PRIORITY_STEP, submit_graph

    async with Scheduler(host="127.0.0.1", dashboard_address="127.0.0.1:0", validate=True) as s, \
            Worker(s.address, host="127.0.0.1", name="gpu-1", nthreads=1, resources={"GPU": 1}), \
            Worker(s.address, host="127.0.0.1", name="cpu-1", nthreads=1), \
            Client(s.address, asynchronous=True, set_as_default=False) as client:
        dsk = {("gpu", i): Task(("gpu", i), _where, i) for i in range(4)}
        dsk[("pinned", 0)] = Task(("pinned", 0), _where, 9)
        options = {**{("gpu", i): TaskOptions(resources={"GPU": 1.0}, priority=3) for i in range(4)},
                   ("pinned", 0): TaskOptions(workers=("cpu-1",), retries=2)}
        futures = submit_graph(client, dsk, list(dsk), "g-2", priority=-5, options=options)
        results = await client.gather(futures)
        assert {name for _, name in results[:4]} == {"gpu-1"}
        assert results[4] == (9, "cpu-1")
        ts = s.tasks[("gpu", 0)]
        assert ts.resource_restrictions == {"GPU": 1.0}
        assert ts.priority[0] == -(3 * PRIORITY_STEP - 5)
        assert s.tasks[("pinned", 0)].priority[0] == 5
        assert s.tasks[("pinned", 0)].retries == 0


_GATE = threading.Event()


def _block() -> str:
    _GATE.wait(30)
    return "returned"


async def test_fail_task_fails_a_task_whose_thread_is_still_running() -> None:
    """What the time-limit watchdog relies on: the worker's state machine takes a failure for a
    task still executing, and the scheduler records it erred with that exception. (When that
    thread returns later, the worker's state machine fails hard: the watchdog restarts the
    worker through its nanny right after, and does not call this without one.)"""
    from distributed import Client, Scheduler, Worker

    from dispatcher.dask_graph import fail_task
    from dispatcher.protocol import NodeTaskError
    from tests.conftest import wait_until

    _GATE.clear()
    async with Scheduler(host="127.0.0.1", dashboard_address="127.0.0.1:0") as s, \
            Client(s.address, asynchronous=True, set_as_default=False) as client:
        w = await Worker(s.address, host="127.0.0.1", nthreads=1)
        try:
            future = client.submit(_block, key="blocked")
            await wait_until(lambda: "blocked" in w.state.tasks
                             and w.state.tasks["blocked"].state == "executing")
            assert fail_task(w, "blocked", NodeTaskError(3, "TimeLimitExceeded", "over 1 s"))
            exc = await future.exception()
            assert isinstance(exc, NodeTaskError) and exc.message == "over 1 s"
            assert s.tasks["blocked"].state == "erred"
            assert not fail_task(w, "no-such-key", RuntimeError())
        finally:
            await w.close(executor_wait=False)
            _GATE.set()


async def test_cancelling_many_futures_lets_the_loop_run_between_slices() -> None:
    """Client.cancel queues a message and awaits nothing: 100,000 futures cancelled in one go
    held the dispatcher's loop for 2.8 s on a loaded machine (every request waited)."""
    import asyncio

    from distributed import Client, Scheduler

    from dispatcher.dask_graph import cancel

    async with Scheduler(host="127.0.0.1", dashboard_address="127.0.0.1:0") as s, \
            Client(s.address, asynchronous=True, set_as_default=False) as client:
        futures = client.map(_where, range(1000), pure=False)  # no worker: they stay pending
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        beside = asyncio.create_task(ticker())
        try:
            await asyncio.sleep(0)
            before = ticks
            await cancel(client, futures, chunk=100)
            during = ticks - before
        finally:
            beside.cancel()
        assert during >= 9, during  # between every two of the ten slices
        assert {f.status for f in futures} == {"cancelled"}


async def test_the_embedded_clusters_streams_send_within_a_millisecond() -> None:
    """What prompt_client and prompt_cluster rely on: each of Dask's batched streams keeps its
    send interval in ``interval`` (seconds); the plugins set it on the scheduler's streams to
    every worker and client and on every worker's stream, for those that join later too. A
    client the dispatcher does not own keeps Dask's interval."""
    from distributed import Client, LocalCluster

    from dispatcher.dask_graph import STREAM_INTERVAL_S, prompt_client, prompt_cluster
    from tests.conftest import wait_until

    async with LocalCluster(processes=False, n_workers=1, dashboard_address=None,
                            scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
                            asynchronous=True) as cluster:
        async with Client(cluster, asynchronous=True, set_as_default=False) as client:
            default = client.scheduler_comm.interval
            assert default > STREAM_INTERVAL_S  # Dask's own: 10 ms
            prompt_client(client)
            await prompt_cluster(client)
            cluster.scale(2)
            await client.wait_for_workers(2)
            async with Client(cluster, asynchronous=True, set_as_default=False) as other:
                scheduler = cluster.scheduler

                def streams() -> list[float]:
                    return ([s.interval for s in scheduler.stream_comms.values()]
                            + [s.interval for s in scheduler.client_comms.values()]
                            + [w.batched_stream.interval for w in cluster.workers.values()])

                await wait_until(lambda: len(streams()) == 6
                                 and set(streams()) == {STREAM_INTERVAL_S}, timeout=10)
                assert client.scheduler_comm.interval == STREAM_INTERVAL_S
                assert other.scheduler_comm.interval == default
                dsk = {("a", 0): Task(("a", 0), _inc, 1)}
                assert await client.gather(submit_graph(client, dsk, [("a", 0)], "g-2", 0)) == [2]


def _plus(i: int, *parents: int) -> int:
    return i + sum(parents)


@pytest.fixture(scope="module")
def sync_client() -> Iterator[Any]:
    from distributed import Client, LocalCluster

    with LocalCluster(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None,
                      scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"}
                      ) as cluster, Client(cluster, set_as_default=False) as client:
        yield client


def _scheduler_keys(prefix: str, dask_scheduler: Any = None) -> list[Any]:
    return [k for k in dask_scheduler.tasks if isinstance(k, tuple) and k[0] == prefix]


def _forgotten(client: Any, prefix: str, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while client.run_on_scheduler(_scheduler_keys, prefix):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)  # the scheduler is another thread's loop: poll it, bounded
    return True


@st.composite
def _dags(draw: st.DrawFn) -> tuple[list[tuple[int, ...]], list[int], str]:
    n = draw(st.integers(1, 40))
    parents = [tuple(sorted(draw(st.sets(st.integers(0, i - 1), max_size=3)))) if i else ()
               for i in range(n)]
    order = draw(st.permutations(range(n)) | st.just(list(range(n))))
    chunks = draw(st.sampled_from(["", "1,1", "3,1", "5,2", f"{n},1", f"{max(n - 1, 1)},3"]))
    return parents, list(order), chunks


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_dags())
def test_a_graph_submitted_in_chunks_computes_what_it_would_in_one(
        sync_client: Any, dag: tuple[list[tuple[int, ...]], list[int], str]) -> None:
    """Any DAG, in any order, handed to Dask whole or in chunks of 1, 2, 3...: its sinks hold
    the values a plain evaluation gives, the chunks are as many as the sizes say, and once the
    sinks and the held futures are let go the scheduler forgets every task (nothing leaks)."""
    from dispatcher.dask_graph import CHUNKS_ENV, Submission, chunking, submit_chunked

    parents, order, chunks = dag
    n = len(parents)
    prefix = f"t-{uuid.uuid4().hex}"
    values: list[int] = []
    for i, ps in enumerate(parents):
        values.append(i + sum(values[p] for p in ps))
    consumed = {p for ps in parents for p in ps}
    sinks = [(prefix, i) for i in range(n) if i not in consumed]
    dsk = {(prefix, i): Task((prefix, i), _plus, i, *[TaskRef((prefix, p)) for p in parents[i]])
           for i in order}
    with pytest.MonkeyPatch.context() as mp:  # (hypothesis: not the function's monkeypatch)
        mp.setenv(CHUNKS_ENV, chunks)
        above, first = chunking()
        into = Submission()
        submit_chunked(sync_client, dsk, sinks, prefix, 0, into=into)
    expected_chunks, size, left = 0, first, n
    while left > 0:
        expected_chunks, left, size = expected_chunks + 1, left - size, min(2 * size, 16_000)
    assert into.chunks == (1 if n <= above else expected_chunks)
    assert sync_client.gather(into.of(sinks)) == [values[k[1]] for k in sinks]
    if into.chunks == 1:
        assert not into.held
    into.held.clear()
    into.futures.clear()
    assert _forgotten(sync_client, prefix)


def test_a_chunked_submission_stops_between_chunks(sync_client: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """``stop()`` true after the first chunk (a cancel came): no later chunk reaches Dask, and
    what did is in the submission, to cancel."""
    from dispatcher.dask_graph import CHUNKS_ENV, Submission, submit_chunked

    monkeypatch.setenv(CHUNKS_ENV, "2,2")
    prefix = f"s-{uuid.uuid4().hex}"
    dsk = {(prefix, i): Task((prefix, i), _plus, i) for i in range(10)}
    dsk[(prefix, 10)] = Task((prefix, 10), _plus, 10, *[TaskRef((prefix, i)) for i in range(10)])
    into = Submission()
    handed: list[int] = []
    into.handed = lambda: handed.append(into.chunks)
    submit_chunked(sync_client, dsk, [(prefix, 10)], prefix, 0, into=into,
                   stop=lambda: into.chunks >= 1)
    assert into.chunks == 1 and handed == [1]
    assert (prefix, 10) not in into.futures and len(into.held) == 2
    assert sorted(sync_client.gather(into.held)) == [0, 1]
    assert sorted(k[1] for k in sync_client.run_on_scheduler(_scheduler_keys, prefix)) == [0, 1]
    into.held.clear()
    assert _forgotten(sync_client, prefix)
