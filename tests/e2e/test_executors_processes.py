"""Executors on real worker processes (issue #16): resources, worker pins and priority on a
``dask scheduler`` with ``dask worker --resources GPU=1``, named executors from the config file
through ``covalent start``; time limits on a Python loop and on a blocking C call (which needs
the worker's nanny to restart it); any cluster manager through ``--cluster`` and ``--adapt``.

Every process is started here and stopped here, by the PID we got when starting it.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

import covalent as ct
from dispatcher.procinfo import alive, children
from tests.conftest import dask_processes, free_port, wait_until
from tests.faults.conftest import Cli, ServerProcess
from tests.tasks import busy_loop, c_sleep, identity, log_run, where

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.processes, pytest.mark.timeout(180)]

CONFIG = """\
[executors.gpu]
resources = {GPU = 1}

[executors.big]
workers = ["cpu-1"]
retries = 1
"""


@pytest.fixture
def env(tmp_path: Path, config_dir: Path) -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    e["COVALENT_DATA_DIR"] = str(tmp_path / "data")
    e["COVALENT_CONFIG_DIR"] = str(config_dir)
    e.pop("COVALENT_TOKEN", None)
    return e


@pytest.fixture
def cli(tmp_path: Path, env: dict[str, str]) -> Iterator[Cli]:
    """``covalent ...`` on this test's data and config dirs; whatever server it started is
    stopped (by ``covalent stop``, then by the PID holding the data dir) at teardown."""
    c = Cli(env, tmp_path / "data")
    yield c
    c.stop_server()


@pytest.fixture
def gpu_cluster(tmp_path: Path, env: dict[str, str]) -> Iterator[str]:
    """``dask scheduler``, worker ``gpu-1`` (resources GPU=1) and worker ``cpu-1``, one thread
    each; stopped by PID at teardown (ask for it before ``cli``: the dispatcher stops first)."""
    with dask_processes(tmp_path, env, [["--name", "gpu-1", "--resources", "GPU=1"],
                                        ["--name", "cpu-1"]]) as address:
        yield address


def status(cli: Cli) -> dict[str, Any]:
    from covalent import api
    from covalent.config import client_config

    return dict(api.request_json(client_config(), "GET", "/status", timeout=10))


async def run(lattice: Any, *args: Any) -> Any:
    """Dispatch through the config ``covalent start`` wrote; wait for the result."""
    dispatch_id = await asyncio.to_thread(ct.dispatch(lattice), *args)
    return await asyncio.wait_for(asyncio.to_thread(ct.get_result, dispatch_id, True), 120)


async def test_resources_workers_and_priority_on_worker_processes(
        gpu_cluster: str, cli: Cli, config_dir: Path, env: dict[str, str],
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "covalent.conf").write_text(CONFIG)
    out = await asyncio.to_thread(cli, "start", "--port", str(free_port()), "--scheduler-address",
                                  gpu_cluster)
    assert out.returncode == 0, out.stderr + out.stdout
    cli.server_pid()
    # `covalent start` rewrote the config (its [dispatcher] table): the nested tables survive.
    config = tomllib.loads((config_dir / "covalent.conf").read_text())
    assert config["executors"]["gpu"] == {"resources": {"GPU": 1}}
    assert config["executors"]["big"] == {"workers": ["cpu-1"], "retries": 1}
    assert config["dispatcher"]["port"] and config["dispatcher"]["token"]
    monkeypatch.setenv("COVALENT_CONFIG_DIR", str(config_dir))
    await wait_until(lambda: asyncio.to_thread(lambda: status(cli)["cluster"]["workers"] == 2),
                     timeout=30, interval=0.1)

    info = await asyncio.to_thread(status, cli)
    workers = {w["name"]: w for w in info["workers"]}
    assert workers["gpu-1"]["resources"] == {"GPU": 1} and workers["cpu-1"]["resources"] == {}
    assert workers["gpu-1"]["threads"] == 1 and workers["gpu-1"]["memory_limit"] > 0
    assert workers["gpu-1"]["address"].startswith("tcp://127.0.0.1:")
    pools = {e["name"]: e for e in info["executors"]}
    assert pools["gpu"]["workers"] == [workers["gpu-1"]["address"]]
    assert pools["big"]["workers"] == [workers["cpu-1"]["address"]]
    assert sorted(pools["dask"]["workers"]) == sorted(w["address"] for w in workers.values())
    shown = (await asyncio.to_thread(cli, "status")).stdout
    assert f"worker {workers['gpu-1']['address']}  name gpu-1  threads 1" in shown
    assert "resources GPU=1" in shown
    assert "gpu: workers with GPU=1, no retries, no time limit, priority 0 -> 1 worker" in shown
    assert "Executors: big, dask, gpu, local" in shown

    on_gpu = ct.electron(where.function, executor="gpu")
    on_big = ct.electron(where.function, executor="big")
    pinned = ct.electron(where.function, executor=ct.executor.DaskExecutor(workers=["gpu-1"]))

    @ct.lattice
    def placed(n):
        return [on_gpu(i) for i in range(n)], on_big(-1), pinned(-2)

    @ct.lattice
    def spread(n):
        return [where(i) for i in range(n)]

    result = await run(placed, 4)
    assert result.status == "COMPLETED", result.error
    gpu_runs, big_run, pinned_run = result.result
    assert {name for _, name, _ in gpu_runs} == {"gpu-1"}
    assert big_run[1] == "cpu-1" and pinned_run[1] == "gpu-1"
    result = await run(spread, 8)
    assert {name for _, name, _ in result.result} == {"gpu-1", "cpu-1"}

    # Priority: tasks queued behind a busy thread start highest priority first.
    log, started, release = tmp_path / "order.log", tmp_path / "started", tmp_path / "release"
    from tests.tasks import gate

    @ct.lattice
    def hold(started, release):
        return ct.electron(gate.function, executor="big")(0, started, release)

    @ct.lattice
    def ranked(log):
        return [ct.electron(log_run.function, executor=ct.executor.DaskExecutor(
                    workers=["cpu-1"], priority=p))(log, f"p{p}") for p in (0, 10, -5, 3)]

    held = await asyncio.to_thread(ct.dispatch(hold), str(started), str(release))
    await wait_until(started.exists, timeout=30)
    queued = await asyncio.to_thread(ct.dispatch(ranked), str(log))
    await wait_until(lambda: asyncio.to_thread(_processing_on, gpu_cluster, "cpu-1", 5), timeout=30)
    release.touch()
    ranked_result = await asyncio.wait_for(asyncio.to_thread(ct.get_result, queued, True), 60)
    assert ranked_result.status == "COMPLETED", ranked_result.error
    assert log.read_text().split() == ["p10", "p3", "p0", "p-5"]
    assert (await asyncio.to_thread(ct.get_result, held, True)).result == 1


def _processing_on(address: str, name: str, n: int) -> bool:
    """The scheduler has ``n`` tasks processing on worker ``name`` (ours, by the public API)."""
    from distributed import Client

    with Client(address, timeout=10, set_as_default=False) as client:
        workers = client.scheduler_info()["workers"]
        target = next(a for a, w in workers.items() if w.get("name") == name)
        return len(client.processing([target])[target]) == n


@ct.lattice
def _after(x):
    return identity(x)


async def _the_slot_is_free_on_a_new_worker(server: ServerProcess, before: int) -> None:
    """The one-worker cluster's slot is free again: a new worker process runs a dispatch."""
    await wait_until(lambda: (server.status() or {}).get("cluster", {}).get("workers") == 1,
                     timeout=30, interval=0.1)
    again = await asyncio.to_thread(ct.dispatch(_after, dispatcher_addr=server.addr), 5)
    assert (await asyncio.wait_for(asyncio.to_thread(ct.get_result, again, True, server.addr),
                                   60)).result == 5
    (now,) = server.worker_pids()
    assert now != before and not alive(before)


async def test_time_limits_stop_a_python_loop_and_a_blocking_c_call(
        tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    server = ServerProcess(tmp_path / "data", env, workers=1, extra=["--time-limit-grace", "1"])
    monkeypatch.setenv("COVALENT_TOKEN", server.token)
    server.start()
    try:
        (before,) = server.worker_pids()
        loop = ct.electron(busy_loop.function, executor=ct.executor.DaskExecutor(time_limit=1))
        blocked = ct.electron(c_sleep.function, executor=ct.executor.LocalExecutor(time_limit=1))

        @ct.lattice
        def wf(marker):
            return loop(marker), blocked(600)

        dispatch_id = await asyncio.to_thread(ct.dispatch(wf, dispatcher_addr=server.addr),
                                              str(tmp_path / "marker"))
        result = await asyncio.wait_for(asyncio.to_thread(ct.get_result, dispatch_id, True,
                                                          server.addr), 90)
        assert result.status == "FAILED"
        nodes = {n["node_name"]: n for n in result.get_all_node_results()}
        assert nodes["busy_loop"]["status"] == "FAILED"
        assert "TimeLimitExceeded" in nodes["busy_loop"]["error"]
        assert "time limit of 1 s" in nodes["busy_loop"]["error"]
        assert (tmp_path / "marker").read_text() == "stopped"
        assert nodes["c_sleep"]["status"] == "FAILED"
        assert "time limit of 1 s (executor 'local')" in nodes["c_sleep"]["error"]
        assert "did not stop within 1 s, so its worker process was restarted" in nodes["c_sleep"]["error"]
        await _the_slot_is_free_on_a_new_worker(server, before)
    finally:
        server.stop()


async def test_cancelling_a_node_blocked_in_a_c_call_frees_its_worker_slot(
        tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    server = ServerProcess(tmp_path / "data", env, workers=1, extra=["--time-limit-grace", "1"])
    monkeypatch.setenv("COVALENT_TOKEN", server.token)
    server.start()
    try:
        (before,) = server.worker_pids()

        @ct.lattice
        def stuck(seconds):
            return c_sleep(seconds)

        dispatch_id = await asyncio.to_thread(ct.dispatch(stuck, dispatcher_addr=server.addr), 3600)

        def running() -> bool:
            node = ct.get_result(dispatch_id, False, server.addr).get_node_result(0)
            return bool(node["status"] == ct.status.RUNNING)
        await wait_until(lambda: asyncio.to_thread(running), timeout=60, interval=0.1)
        await asyncio.to_thread(ct.cancel, dispatch_id, None, server.addr)
        result = await asyncio.to_thread(ct.get_result, dispatch_id, True, server.addr)
        assert result.status == ct.status.CANCELLED
        # The sleep never returns: after the grace period the worker process is restarted,
        # and the one slot this cluster has runs the next dispatch at once, not in an hour.
        await _the_slot_is_free_on_a_new_worker(server, before)
    finally:
        server.stop()


async def test_a_cluster_manager_by_import_path_adapts_from_zero_and_closes_on_stop(
        cli: Cli, config_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kwargs = {"n_workers": 0, "threads_per_worker": 1, "processes": True, "host": "127.0.0.1"}
    out = await asyncio.to_thread(cli, "start", "--port", str(free_port()), "--cluster",
                                  "distributed.LocalCluster", "--cluster-kwargs", json.dumps(kwargs),
                                  "--adapt", "0:2", "--dashboard-address", ":0")
    assert out.returncode == 0, out.stderr + out.stdout
    assert "(distributed.LocalCluster, adaptive 0..2 workers)" in out.stdout
    pid = cli.server_pid()
    # The cluster's scheduler (and its dashboard) run in the dispatcher's process: nothing it
    # listens on is reachable from another machine (the dashboard took Dask's ":8787", every
    # interface, and ignored --dashboard-address).
    listening = [c.laddr for c in psutil.Process(pid).net_connections("inet")
                 if c.status == psutil.CONN_LISTEN]
    assert listening and {a.ip for a in listening} == {"127.0.0.1"}, listening
    monkeypatch.setenv("COVALENT_CONFIG_DIR", str(config_dir))
    info = await asyncio.to_thread(status, cli)
    assert info["cluster"]["manager"] == "distributed.LocalCluster"
    assert info["cluster"]["adapt"] == [0, 2] and info["cluster"]["workers"] == 0

    @ct.lattice
    def wf(n):
        return [where(i) for i in range(n)]

    result = await run(wf, 3)  # the cluster scales up from 0 to run it
    assert result.status == "COMPLETED", result.error
    workers = {pid for _, _, pid in result.result}
    assert workers and workers <= set(_descendants(pid))
    shown = (await asyncio.to_thread(cli, "status")).stdout
    assert "distributed.LocalCluster, adaptive 0..2 workers" in shown

    out = await asyncio.to_thread(cli, "stop")
    assert "stopped" in out.stdout
    deadline = time.monotonic() + 30
    while any(alive(p) for p in workers) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)  # other processes exiting: nothing to wait on but their PIDs
    assert not any(alive(p) for p in workers)


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = children(p)
        out += kids
        todo += kids
    return out


async def test_bad_cluster_options_stop_the_start_with_one_line(cli: Cli) -> None:
    out = await asyncio.to_thread(cli, "start", "--port", str(free_port()), "--cluster",
                                  "dask_nowhere.NoCluster")
    assert out.returncode != 0
    assert "--cluster dask_nowhere.NoCluster: cannot import dask_nowhere" in out.stderr + out.stdout
    out = await asyncio.to_thread(cli, "start", "--port", str(free_port()), "--cluster",
                                  "distributed.LocalCluster", "--cluster-kwargs", '{"no_such": 1}')
    assert out.returncode != 0
    assert 'distributed.LocalCluster(**{"no_such": 1}) did not start' in out.stderr
    assert "no_such" in out.stderr.split("did not start")[1]  # the worker's own complaint
    out = await asyncio.to_thread(cli, "start", "--port", str(free_port()), "--adapt", "3:1")
    assert out.returncode != 0 and "MIN:MAX" in out.stderr + out.stdout
