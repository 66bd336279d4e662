"""Dask worker processes die under a dispatch: killed, crashing on every attempt, out of memory."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

import covalent as ct
from tests.conftest import new_database, wait_until
from tests.faults.conftest import REPO, ServerProcess
from tests.tasks import add, die, gate, hog

pytestmark = [pytest.mark.slow, pytest.mark.processes, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def workers_server(tmp_path_factory: pytest.TempPathFactory, store_kind: str,
                   request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    """Two 400 MB worker processes; Dask retries a task once after its worker dies."""
    tmp = tmp_path_factory.mktemp("workers")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["COVALENT_CONFIG_DIR"] = str(tmp / "config")
    db_url, drop_database = new_database(request, store_kind)
    env["COVALENT_DB_URL"] = db_url
    env["DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES"] = "1"
    # Dask's LocalCluster closed a nanny for good when, this long after one of its worker's
    # deaths, its worker was down again (restarting): with the default (15 s) a cluster whose
    # nodes kill their workers often lost them all. The dispatcher sets its own; a short one
    # here makes the race certain without the fix.
    env["DASK_DISTRIBUTED__DEPLOY__LOST_WORKER_TIMEOUT"] = "0.3s"
    s = ServerProcess(tmp / "data", env, workers=2, extra=["--mem-per-worker", "400MB"])
    s.start()
    yield s
    s.stop()
    drop_database()


@pytest.fixture(autouse=True)
def _token(workers_server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COVALENT_TOKEN", workers_server.token)


async def test_task_on_a_killed_worker_is_retried_and_the_dispatch_completes(
        workers_server: ServerProcess, tmp_path: Path) -> None:
    started, release = tmp_path / "started", tmp_path / "release"

    @ct.lattice
    def wf(x):
        return add(gate(x, str(started), str(release)), 100)

    addr = workers_server.addr
    dispatch_id = await asyncio.to_thread(ct.dispatch(wf, dispatcher_addr=addr), 1)
    await wait_until(lambda: _pid_in(started), timeout=30)
    first = _pid_in(started)
    assert first in workers_server.worker_pids()
    started.unlink()
    os.kill(first, signal.SIGKILL)
    await wait_until(lambda: _pid_in(started), timeout=60)  # the task runs again, elsewhere
    assert _pid_in(started) != first
    release.touch()
    result = await asyncio.to_thread(ct.get_result, dispatch_id, True, addr)
    assert result.status == ct.status.COMPLETED, result.error
    assert result.result == 102


async def test_a_task_that_kills_every_worker_fails_with_killed_worker(
        workers_server: ServerProcess) -> None:
    @ct.lattice
    def wf(x):
        a = add(x, 1)
        return a, add(die(a), 1)

    addr = workers_server.addr
    dispatch_id = await asyncio.to_thread(ct.dispatch(wf, dispatcher_addr=addr), 1)
    result = await asyncio.wait_for(asyncio.to_thread(ct.get_result, dispatch_id, True, addr), 90)
    assert result.status == ct.status.FAILED
    assert result.get_node_result(0)["output"] == 2  # ran before: kept
    failed = result.get_node_result(3)
    assert failed["node_name"] == "die" and failed["status"] == "FAILED"
    assert "KilledWorker: 2 Dask worker processes died while they held this node" in failed["error"]
    assert "die" in result.error
    assert result.get_node_result(4)["status"] == "NEW_OBJECT"  # fail-slow: never ran
    await wait_until(lambda: (workers_server.status() or {}).get("cluster", {}).get("workers") == 2,
                     timeout=60)  # the nannies bring the workers back


async def test_workers_killed_again_and_again_always_come_back(
        workers_server: ServerProcess) -> None:
    def both_up() -> bool:
        return (workers_server.status() or {}).get("cluster", {}).get("workers") == 2

    for _ in range(3):
        await wait_until(both_up, timeout=60)
        for pid in workers_server.worker_pids():
            os.kill(pid, signal.SIGKILL)
        await wait_until(lambda: not both_up(), timeout=30)
    await wait_until(both_up, timeout=60)  # (it stayed at 0: every dispatch NoWorkerError)
    addr = workers_server.addr
    dispatch_id = await asyncio.to_thread(ct.dispatch(ct.lattice(add), dispatcher_addr=addr), 1, 2)
    result = await asyncio.wait_for(asyncio.to_thread(ct.get_result, dispatch_id, True, addr), 60)
    assert (result.status, result.result) == (ct.status.COMPLETED, 3)


async def test_a_task_over_the_memory_limit_fails_and_the_rest_post_processes(
        workers_server: ServerProcess) -> None:
    @ct.lattice
    def wf(x):
        a = add(x, 1)
        hog(after=a)  # once `add` has run: the worker it kills cannot take `add` with it
        return a

    addr = workers_server.addr
    dispatch_id = await asyncio.to_thread(ct.dispatch(wf, dispatcher_addr=addr), 1)
    result = await asyncio.wait_for(asyncio.to_thread(ct.get_result, dispatch_id, True, addr), 120)
    assert result.status == ct.status.FAILED
    [node] = [n for n in result.get_all_node_results() if n["node_name"] == "hog"]
    assert node["status"] == "FAILED"
    assert "KilledWorker" in node["error"] and "memory limit" in node["error"]
    assert result.post_process() == 2
    await wait_until(lambda: (workers_server.status() or {}).get("cluster", {}).get("workers") == 2,
                     timeout=60)


def _pid_in(path: Path) -> int:
    """The PID a task wrote to ``path``, once it is all there (0 before)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return 0
    return int(text) if text.strip().isdigit() else 0
