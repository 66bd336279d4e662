"""GET /metrics: scraped during a workload, its numbers are checked against what ran."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

import covalent as ct
from covalent.triggers import TimeTrigger
from dispatcher.app import create_app
from dispatcher.metrics import METRICS, _Names
from dispatcher.keys import STORE
from tests import tasks
from tests.conftest import fetched, in_process_settings, run, wait_until
from tests.tasks import add, block, fail, identity, multiply

pytestmark = pytest.mark.all_stores  # run on every store (tests/conftest.py)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@ct.lattice
def fan(n):
    return [add(i, 1) for i in range(n)] + [fail(0)]


@ct.lattice
def waits(x):
    return block(x)


@ct.lattice
def one(x):
    return add(x, 1)


async def scrape(client: TestClient) -> Samples:
    resp = await client.get("/metrics")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(await resp.text()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_the_numbers_are_what_ran(dispatcher: TestClient, addr: str) -> None:
    n = 5
    failed = await run(fan, addr, n)
    assert failed.status == ct.status.FAILED
    running = await asyncio.to_thread(ct.dispatch(waits, dispatcher_addr=addr), 7)
    await wait_until(lambda: _status(dispatcher, running, 0, "RUNNING"), timeout=10)

    during = await scrape(dispatcher)  # one node RUNNING, not finished
    assert value(during, "covalent_nodes_started_total", electron="block") == 1
    assert value(during, "covalent_nodes_completed_total", electron="block") == 0
    assert value(during, "covalent_dispatches", status="RUNNING") == 1
    assert value(during, "covalent_dispatches", status="FAILED") == 1

    tasks.release.set()
    done = await fetched(running, addr)
    assert done.result == 7
    after = await scrape(dispatcher)
    ran = {"add": n, "fail": 1, "block": 1}
    for name, count in ran.items():
        assert value(after, "covalent_nodes_started_total", electron=name) == count, name
    assert value(after, "covalent_nodes_completed_total", electron="add") == n
    assert value(after, "covalent_nodes_completed_total", electron="block") == 1
    assert value(after, "covalent_nodes_failed_total", electron="fail") == 1
    assert value(after, "covalent_nodes_failed_total", electron="add") == 0
    assert value(after, "covalent_node_run_seconds_count") == n + 2  # each node that ran, once
    assert value(after, "covalent_node_queue_seconds_count") == n + 2
    assert value(after, "covalent_node_run_seconds_sum") > 0
    assert value(after, "covalent_dispatches", status="COMPLETED") == 1
    assert value(after, "covalent_dispatches", status="RUNNING") == 0
    assert value(after, "covalent_dispatches_ended_total", status="FAILED") == 1
    assert value(after, "covalent_dispatches_ended_total", status="COMPLETED") == 1
    assert value(after, "covalent_store_write_seconds_count", operation="create") == 2
    assert value(after, "covalent_store_write_seconds_count", operation="apply") >= 1
    assert value(after, "covalent_open_connections", kind="http") >= 1
    assert value(after, "covalent_open_connections", kind="database") >= 1
    assert value(after, "covalent_recorder_backlog") == 0  # everything was written


@ct.lattice
def shapes(x):
    first = add(x, 1)
    both = multiply(add(first, 2), y=first)
    total = identity([first, both, add(3, 4)])
    ct.wait(block(total), [first])
    return {"t": total}


async def test_a_running_dispatch_is_counted_from_its_graph_in_memory_as_from_the_store(
        dispatcher: TestClient, addr: str) -> None:
    # Node names and parents (queue times) come from the runner's machine while the dispatch
    # runs here, not from its stored JSON parsed again (#23): both must say the same.
    running = await asyncio.to_thread(ct.dispatch(shapes, dispatcher_addr=addr), 1)
    await wait_until(lambda: _status(dispatcher, running, 0, "COMPLETED"), timeout=10)
    metrics, store = dispatcher.app[METRICS], dispatcher.app[STORE]
    machine = metrics.running(running)
    assert machine is not None
    names, parents = await metrics._stored_graph(running, (await store.get_dispatch(running)).graph_json)
    n = len(names)
    assert n == len(machine.graph.nodes) > 10
    assert [tuple(x) for x in names] == [tuple(x) for x in _Names(machine.graph.nodes)]
    assert parents is not None
    assert all(sorted(parents(i)) == sorted(machine.parent_ids(i)) for i in range(n))
    assert sum(len(list(parents(i))) for i in range(n)) == len(machine.graph.edges)
    tasks.release.set()
    assert (await fetched(running, addr)).status == ct.status.COMPLETED
    assert metrics.running(running) is None  # ended: the store's copy is what is left


async def test_trigger_fires_are_counted(dispatcher: TestClient, addr: str) -> None:
    pending = await asyncio.to_thread(ct.dispatch(one, dispatcher_addr=addr, disable_run=True), 1)
    trigger = TimeTrigger(time_gap=0.05, dispatcher_addr=addr)
    trigger.lattice_dispatch_id = pending
    await asyncio.to_thread(trigger.register)

    async def fired() -> int:
        body = await (await dispatcher.get("/api/v1/triggers")).json()
        return int(body["triggers"][0]["fire_count"])

    await wait_until(lambda: _at_least(fired, 2), timeout=10)
    await asyncio.to_thread(ct.stop_triggers, pending, addr)
    samples = await scrape(dispatcher)
    assert value(samples, "covalent_trigger_fires_total") == await fired() >= 2


async def test_metrics_need_the_token(config_dir: Path, aiohttp_client: Any, tmp_path: Path) -> None:
    secured = replace(in_process_settings(tmp_path / "data"), token="t" * 43)
    client = await aiohttp_client(create_app(secured))
    assert (await client.get("/metrics")).status == 401
    resp = await client.get("/metrics", headers={"Authorization": "Bearer " + "t" * 43})
    assert resp.status == 200 and "covalent_dispatches" in await resp.text()


async def _at_least(count: Any, n: int) -> bool:
    return bool(await count() >= n)


async def _status(client: TestClient, dispatch_id: str, node: int, status: str) -> bool:
    resp = await client.get(f"/api/v1/dispatches/{dispatch_id}/nodes/{node}")
    return resp.status == 200 and (await resp.json())["status"] == status
