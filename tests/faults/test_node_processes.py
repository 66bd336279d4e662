"""Processes a node starts without ``subprocess`` (``os.system``, ``os.posix_spawn``,
``os.fork``) go with their worker process: when a cancel or a time limit restarts it, and when
the dispatcher is killed. Before, they lived on under init, and a node resumed after a
``kill -9`` ran next to the copy its first run had started."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

import covalent as ct
from dispatcher.procinfo import alive
from tests.conftest import wait_until
from tests.faults.conftest import ServerProcess
from tests.tasks import sleep_in_subprocess, spawn_sleep

pytestmark = [pytest.mark.slow, pytest.mark.processes, pytest.mark.timeout(180)]

WAYS = ["system", "posix_spawn", "fork"]


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


@ct.lattice
def _spawning(ways, where):
    return [spawn_sleep(how, f"{where}/{how}.pid") for how in ways]


async def test_a_cancel_takes_the_processes_a_blocked_node_started(
        server: ServerProcess, tmp_path: Path) -> None:
    server.workers, server.extra = 3, ["--time-limit-grace", "1"]
    server.start()
    dispatch_id = await asyncio.to_thread(
        ct.dispatch(_spawning, dispatcher_addr=server.addr), WAYS, str(tmp_path))
    await wait_until(lambda: all(_pid(tmp_path / f"{w}.pid") for w in WAYS), timeout=60)
    pids = {w: _pid(tmp_path / f"{w}.pid") for w in WAYS}
    assert all(alive(p) for p in pids.values() if p)
    try:
        await asyncio.to_thread(ct.cancel, dispatch_id, dispatcher_addr=server.addr)
        result = await asyncio.to_thread(ct.get_result, dispatch_id, True, server.addr)
        assert result.status == ct.status.CANCELLED
        # Each node is blocked in a C call: after the grace its worker restarts, and its
        # sleep goes first.
        await wait_until(lambda: not any(alive(p) for p in pids.values() if p), timeout=30)
    finally:
        for p in pids.values():  # the test failed: still ours to stop, by PID
            if p and alive(p):
                os.kill(p, signal.SIGKILL)


async def test_a_killed_dispatcher_leaves_no_process_of_its_nodes_running(
        server: ServerProcess, tmp_path: Path) -> None:
    ways = ["posix_spawn", "subprocess"]
    server.start()
    await asyncio.to_thread(ct.dispatch(_spawning, dispatcher_addr=server.addr), ways,
                            str(tmp_path))
    await wait_until(lambda: all(_pid(tmp_path / f"{w}.pid") for w in ways), timeout=60)
    pids = [p for w in ways if (p := _pid(tmp_path / f"{w}.pid"))]
    try:
        server.kill9()  # (it waits for the workers to go, not for these)
        # The workers saw their parent go and took their nodes' processes with them: a
        # resumed node would not run next to its first run's copy.
        await wait_until(lambda: not any(alive(p) for p in pids), timeout=30)
    finally:
        for p in pids:  # the test failed: still ours to stop, by PID
            if alive(p):
                os.kill(p, signal.SIGKILL)


@ct.lattice
def _blocked_beside_a_busy_one(pidfile, marker):
    return spawn_sleep("system", pidfile), sleep_in_subprocess(3, marker)


async def test_a_restart_for_one_node_fails_no_other_node_of_that_worker(
        server: ServerProcess, tmp_path: Path) -> None:
    # The cancelled node's worker restarts; another node it ran, waiting for its own
    # subprocess, must not be recorded FAILED for that (its child killed under it): Dask
    # runs it again, as for any worker that dies.
    server.workers, server.extra = 1, ["--time-limit-grace", "1", "--threads-per-worker", "2"]
    server.start()
    pidfile, marker = tmp_path / "system.pid", tmp_path / "busy"
    dispatch_id = await asyncio.to_thread(
        ct.dispatch(_blocked_beside_a_busy_one, dispatcher_addr=server.addr), str(pidfile),
        str(marker))
    await wait_until(lambda: _pid(pidfile) and marker.exists(), timeout=60)
    sleeper = _pid(pidfile)
    nodes = (await asyncio.to_thread(ct.get_result, dispatch_id, False, server.addr)
             ).get_all_node_results()
    [blocked] = [n["node_id"] for n in nodes if n["node_name"] == "spawn_sleep"]
    try:
        await asyncio.to_thread(ct.cancel, dispatch_id, [blocked], dispatcher_addr=server.addr)
        result = await asyncio.to_thread(ct.get_result, dispatch_id, True, server.addr)
        busy = [n for n in result.get_all_node_results()
                if n["node_name"] == "sleep_in_subprocess"]
        assert [(n["status"], n["output"]) for n in busy] == [("COMPLETED", 3)], busy
        assert len(marker.read_text().split()) == 2  # it ran again, on the new worker process
        await wait_until(lambda: not alive(sleeper), timeout=30)  # the blocked one's went
    finally:
        if sleeper and alive(sleeper):
            os.kill(sleeper, signal.SIGKILL)
