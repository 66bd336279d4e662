"""The one private Dask call: fails loudly here, not in a user's dispatch, if Dask changes it."""

from __future__ import annotations

import inspect

from dask._expr import LLGExpr
from dask.task_spec import Task


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


async def test_a_held_key_survives_cancelling_its_consumer() -> None:
    import asyncio

    from dask.task_spec import TaskRef
    from distributed import Client, Event, LocalCluster

    from dispatcher.dask_graph import hold, submit_graph, wait_all

    async with LocalCluster(processes=False, n_workers=1, dashboard_address=None,
                            asynchronous=True) as cluster:
        async with Client(cluster, asynchronous=True, set_as_default=False) as client:
            gate = Event("gate-held", client=client)
            dsk = {("a", 0): Task(("a", 0), _wait_then_inc, 1, "gate-held"),
                   ("b", 0): Task(("b", 0), _inc, TaskRef(("a", 0)))}
            [b] = submit_graph(client, dsk, [("b", 0)], "g-held", priority=0)
            [a] = hold(client, [("a", 0)])
            await client.cancel([b], force=True)
            await gate.set()
            await asyncio.wait_for(wait_all([a]), 10)
            assert a.status == "finished" and await a.result() == 2


def _wait_then_inc(x: int, name: str) -> int:
    from distributed import Event

    Event(name).wait(10)
    return x + 1
