"""Executors mean something (issue #16): retries, time limits and named executors, end to end
on a real loopback server and an in-process cluster (resources, workers, priority and blocking
C calls need worker processes: see test_executors_processes.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

import covalent as ct
from dispatcher.app import create_app
from tests.conftest import auth_headers, in_process_settings, run, wait_until
from tests.tasks import busy_loop, flaky, identity, touch

EXECUTORS = {
    "flaky": {"retries": 1},
    "gpu": {"resources": {"GPU": 1}, "time_limit": 30},
    "slurm": {"username": "me", "address": "hpc.example.org"},  # Covalent's settings only
    "awsbatch": {"retries": 0, "vcpu": 2},  # mapped: runs on any worker as it is
    "withpip": {"pip": ["cloudpickle"]},  # installed already: pip finds it without a network
    "badpip": {"pip": ["/no/such/dir/covalent_nothing-1.0-py3-none-any.whl"]},
}


@pytest.fixture
async def server(config_dir: Path, aiohttp_client: Any, tmp_path: Path) -> AsyncIterator[TestClient]:
    """A dispatcher whose config file maps the named executors above."""
    from tests import tasks

    settings = dataclasses.replace(in_process_settings(tmp_path / "data", no_worker_timeout=0.5),
                                   executors=EXECUTORS,
                                   config_source="/home/me/.config/covalent/covalent.conf")
    yield await aiohttp_client(create_app(settings))
    tasks.release.set()


@pytest.fixture
def addr(server: TestClient) -> str:
    return f"127.0.0.1:{server.port}"


def node_json(addr: str, dispatch_id: str, node_id: int) -> dict[str, Any]:
    """The node record as the REST API shows it."""
    req = urllib.request.Request(f"http://{addr}/api/v1/dispatches/{dispatch_id}/nodes/{node_id}",
                                 headers=auth_headers())
    with urllib.request.urlopen(req, timeout=10) as resp:
        return dict(json.loads(resp.read()))


async def test_retries_run_a_failing_node_again_and_the_record_counts_attempts(addr: str,
                                                                              tmp_path: Path) -> None:
    twice = ct.electron(flaky.function, executor=ct.executor.DaskExecutor(retries=2))

    @ct.lattice
    def wf(counter):
        return twice(counter, 2)

    result = await run(wf, addr, str(tmp_path / "runs"))
    assert result.status == "COMPLETED", result.error
    assert result.result == 3  # failed twice, the third run returned
    assert (tmp_path / "runs").read_text() == "3"
    node = await asyncio.to_thread(node_json, addr, result.dispatch_id, 0)
    assert (node["status"], node["attempts"], node["error"]) == ("COMPLETED", 3, None)


async def test_retries_exhausted_fail_the_node_naming_the_attempts(addr: str, tmp_path: Path) -> None:
    @ct.lattice
    def wf(counter):
        return flaky(counter, 10)  # executor "dask": no retries

    @ct.electron(executor="flaky")  # [executors.flaky] retries = 1
    def named(counter):
        return flaky.function(counter, 10)

    @ct.lattice
    def wf2(counter):
        return named(counter)

    once = await run(wf, addr, str(tmp_path / "a"))
    assert once.status == "FAILED" and (tmp_path / "a").read_text() == "1"
    assert (await asyncio.to_thread(node_json, addr, once.dispatch_id, 0))["attempts"] == 1

    twice = await run(wf2, addr, str(tmp_path / "b"))
    assert twice.status == "FAILED" and (tmp_path / "b").read_text() == "2"
    node = await asyncio.to_thread(node_json, addr, twice.dispatch_id, 0)
    assert node["attempts"] == 2 and "RuntimeError: run 2 fails" in node["error"]
    assert "RuntimeError: run 2 fails (failed 2 attempts)" in twice.error


@pytest.mark.slow
async def test_time_limit_stops_a_python_loop_and_frees_its_thread(addr: str, tmp_path: Path) -> None:
    limited = ct.electron(busy_loop.function, executor=ct.executor.DaskExecutor(time_limit=0.3))

    @ct.lattice
    def wf(d):  # three loops on a worker with two threads: the third needs a freed thread
        return [limited(f"{d}/{i}") for i in range(3)], identity(7)

    result = await run(wf, addr, str(tmp_path))
    assert result.status == "FAILED"
    for i in range(3):
        node = _nth(result, "busy_loop", i)
        assert node["status"] == "FAILED"
        assert "TimeLimitExceeded" in node["error"] and "time limit of 0.3 s" in node["error"]
        assert (tmp_path / str(i)).read_text() == "stopped"
    assert _nth(result, "identity", 0)["output"] == 7

    @ct.lattice
    def after(x):
        return identity(x)

    assert (await run(after, addr, 8)).result == 8


def _nth(result: Any, name: str, i: int) -> dict[str, Any]:
    nodes = [n for n in result.get_all_node_results() if n["node_name"] == name]
    return result.get_node_result(nodes[i]["node_id"])  # type: ignore[no-any-return]


async def test_an_unmapped_executor_fails_the_dispatch_before_anything_runs(addr: str,
                                                                            tmp_path: Path) -> None:
    @ct.electron(executor=ct.executor.SlurmExecutor(username="me", address="hpc"))
    def on_slurm(x):
        return x

    @ct.electron(executor="tpu")
    def on_tpu(x):
        return x

    @ct.lattice
    def wf(path):
        return touch(path), on_slurm(1), on_tpu(2)

    result = await run(wf, addr, str(tmp_path / "ran"))
    assert result.status == "FAILED"
    assert not (tmp_path / "ran").exists()  # all or nothing: no electron ran
    error = result.error
    assert "a SlurmExecutor object (executor 'slurm')" in error and "executor 'tpu'" in error
    assert "Configured executors: awsbatch, badpip, dask, flaky, gpu, local, withpip" in error
    assert "electron 'on_tpu' (node 4) uses executor 'tpu'" in error
    # the proposed mapping runs it on the cluster as it is: no resources nobody has (#22)
    assert "[executors.slurm]\n    retries = 0\n" in error and "covalent restart" in error
    assert "resources = {GPU = 1} for workers started with --resources GPU=1" in error
    assert "/home/me/.config/covalent/covalent.conf" in error
    assert "sets only keys that mean nothing here (address, username)" in error
    assert "dask_jobqueue.SLURMCluster" in error
    nodes = {n["node_name"]: n for n in result.get_all_node_results()}
    assert nodes["on_slurm"]["status"] == "FAILED" and "UnknownExecutor" in nodes["on_slurm"]["error"]
    assert nodes["touch"]["status"] == "NEW_OBJECT"


async def test_a_plugin_executor_runs_once_its_name_is_mapped(addr: str) -> None:
    class LooksLikeOne:  # someone else's object: never runs as if it were ours
        short_name = "dask"

    @ct.electron(executor=ct.executor.AWSBatchExecutor(vcpu=2, memory=4))
    def batch(x):
        return x * 2

    @ct.electron(executor="awsbatch")
    def by_name(x):
        return x + 1

    @ct.lattice
    def wf(x):
        return batch(x), by_name(x)

    result = await run(wf, addr, 5)
    assert result.status == "COMPLETED", result.error
    assert result.result == [10, 6]  # a returned tuple comes back a list, as in Covalent

    for executor, said in ((LooksLikeOne(), "uses a LooksLikeOne object (executor 'dask')"),
                           (ct.executor.AzureBatchExecutor(pool_id="p"),  # "an", not "a" (#22)
                            "uses an AzureBatchExecutor object (executor 'azurebatch')")):
        refused = await run(ct.lattice(ct.electron(identity.function, executor=executor)), addr, 1)
        assert refused.status == "FAILED" and said in refused.error


async def test_resources_no_worker_has_fail_the_node_instead_of_waiting_forever(addr: str) -> None:
    @ct.electron(executor="gpu")  # [executors.gpu] resources = {GPU = 1}; the worker has none
    def train(x):
        return x

    @ct.lattice
    def wf(x):
        return train(x), identity(x)

    result = await run(wf, addr, 3)
    assert result.status == "FAILED"
    node = _nth(result, "train", 0)
    assert node["status"] == "FAILED"
    assert "no worker of the cluster can run this node (it needs resources GPU=1)" in node["error"]
    assert "none came within 0.5 s" in node["error"] and "dask worker --resources GPU=1" in node["error"]
    assert _nth(result, "identity", 0)["output"] == 3


async def test_status_lists_named_executors_and_the_workers_serving_them(server: TestClient) -> None:
    resp = await server.get("/api/v1/status", headers=auth_headers())
    body = await resp.json()
    assert [e["name"] for e in body["executors"]] == ["awsbatch", "badpip", "dask", "flaky", "gpu",
                                                      "local", "withpip"]
    gpu = next(e for e in body["executors"] if e["name"] == "gpu")
    assert gpu["options"] == {"time_limit": 30.0, "resources": {"GPU": 1.0}}
    assert gpu["workers"] == []  # the in-process worker advertises no GPU
    # `covalent status` prints these: every option a task gets, also for a bare mapping (#22)
    assert gpu["description"] == "workers with GPU=1, no retries, time limit 30 s, priority 0"
    awsbatch = next(e for e in body["executors"] if e["name"] == "awsbatch")
    assert awsbatch["description"] == "any worker, no retries, no time limit, priority 0"
    assert body["unmapped_executors"] == {"slurm": ["address", "username"]}
    (worker,) = body["workers"]
    assert worker["threads"] == 2 and worker["resources"] == {}
    assert worker["address"] and "gpu" not in worker["executors"] and "dask" in worker["executors"]
    assert next(e for e in body["executors"] if e["name"] == "dask")["workers"] == [worker["address"]]


@pytest.mark.slow
async def test_pip_packages_of_a_named_executor_are_installed_before_its_first_node(addr: str) -> None:
    from dispatcher.worker.packages import packages  # the in-process worker's own record

    packages.installed.discard(("cloudpickle",))

    @ct.electron(executor="withpip")
    def uses(x):
        import cloudpickle

        return x, bool(cloudpickle.__version__)

    @ct.electron(executor="badpip")
    def cannot(x):
        return x

    @ct.lattice
    def wf(x):
        return uses(x), uses(x + 1), cannot(x)

    result = await run(wf, addr, 1)
    assert result.status == "FAILED"
    assert [_nth(result, "uses", i)["output"] for i in range(2)] == [(1, True), (2, True)]
    assert ("cloudpickle",) in packages.installed  # once for both nodes
    error = _nth(result, "cannot", 0)["error"]
    assert "PackageInstallError" in error and "(the packages of executor 'badpip')" in error
    assert "covalent_nothing-1.0-py3-none-any.whl" in error


def test_a_malformed_executor_table_stops_the_server_with_its_name(tmp_path: Path) -> None:
    settings = dataclasses.replace(in_process_settings(tmp_path), config_source="c.conf",
                                   executors={"gpu": {"resources": {"GPU": "one"}}})
    with pytest.raises(ValueError, match=r"\[executors.gpu\] in c.conf: resource 'GPU' must be a "
                                         "positive number, got 'one'"):
        create_app(settings)


@pytest.mark.parametrize("options, message", [
    ({"retries": -1}, "node 0 (f0) options: retries must be an integer >= 0 and at most 100, got -1"),
    ({"resources": {"GPU": "lots"}}, "resource 'GPU' must be a positive number"),
    ({"priority": 10**9}, "priority must be an integer from -1000 to 1000"),
    ("fast", "expected an object"),
])
async def test_malformed_options_on_the_wire_are_400_and_store_nothing(
        server: TestClient, options: Any, message: str) -> None:
    from covalent import wire

    dispatch_id = "00000000-0000-4000-8000-000000000001"
    node = {"id": 0, "name": "f0", "kind": "electron", "fn": 0, "options": options}
    body = wire.pack({"dispatch_id": dispatch_id, "graph": {"nodes": [node], "edges": []},
                      "inputs": 0, "lattice": 0}, [b"blob"])
    resp = await server.post(wire.API + "/dispatches", data=body,
                             headers={"Content-Type": wire.CONTENT_TYPE, **auth_headers()})
    payload = await resp.json()
    assert (resp.status, payload["error"]) == (400, "InvalidRequest")
    assert message in payload["message"]
    missing = await server.get(f"{wire.API}/dispatches/{dispatch_id}/status", headers=auth_headers())
    assert missing.status == 404


@ct.electron(executor=ct.executor.DaskExecutor(retries=2))
def _fails_once_then_waits(counter, started):
    import time
    from pathlib import Path

    from tests.tasks import flaky

    flaky.function(counter, 1)  # run 1 raises
    Path(started).touch()
    time.sleep(120)  # run 2 waits to be cancelled (the worker's sleep wakes for it)


async def test_a_node_cancelled_in_its_second_attempt_counts_both(addr: str,
                                                                   tmp_path: Path) -> None:
    @ct.lattice
    def wf(counter, started):
        return _fails_once_then_waits(counter, started)

    started = tmp_path / "started"
    dispatch_id = await asyncio.to_thread(ct.dispatch(wf, dispatcher_addr=addr),
                                          str(tmp_path / "runs"), str(started))
    await wait_until(started.exists, timeout=30)

    async def shown_running() -> bool:
        node = await asyncio.to_thread(node_json, addr, dispatch_id, 0)
        return bool(node["status"] == "RUNNING")

    await wait_until(shown_running, timeout=30)  # after it has run 50 ms
    running = await asyncio.to_thread(node_json, addr, dispatch_id, 0)
    assert running["attempts"] == 2  # the attempt it is in
    await asyncio.to_thread(ct.cancel, dispatch_id, None, addr)
    result = await asyncio.to_thread(ct.get_result, dispatch_id, True, addr)
    assert result.status == "CANCELLED"
    node = await asyncio.to_thread(node_json, addr, dispatch_id, 0)
    assert (node["status"], node["attempts"]) == ("CANCELLED", 2)  # was 1
