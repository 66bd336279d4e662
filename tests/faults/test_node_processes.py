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
from tests.tasks import spawn_sleep

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
