"""The embedded scheduler in a process of its own (the default): it works, talks over Unix sockets, and never
outlives the dispatcher (a kill -9 included); --no-scheduler-process keeps it in the dispatcher."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import covalent as ct
from dispatcher.instance import holder
from dispatcher.procinfo import alive, children
from tests.conftest import free_port, wait_until
from tests.faults.conftest import REPO, ServerProcess, _cmdline
from tests.tasks import add, gate, identity, two_node

pytestmark = [pytest.mark.slow, pytest.mark.processes, pytest.mark.timeout(120)]


async def test_the_scheduler_process_serves_and_goes_with_a_killed_dispatcher(
        server: ServerProcess) -> None:
    server.start()  # the default: the embedded scheduler in a process of its own
    info = server.status()
    assert info is not None and info["cluster"]["scheduler"].startswith("unix:///")
    [scheduler] = [p for p in children(server.proc.pid)
                   if "dispatcher.scheduler_process" in _cmdline(p)]

    dispatch_id = await asyncio.to_thread(ct.dispatch(two_node, dispatcher_addr=server.addr), 2, 3)
    result = await asyncio.to_thread(ct.get_result, dispatch_id, True, server.addr)
    assert result.status == ct.status.COMPLETED and result.result == 10

    server.spawned += children(server.proc.pid)  # reaped below if anything stays behind
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(10)
    await wait_until(lambda: not alive(scheduler), timeout=10)  # it saw its parent go, alone
    server.kill9()  # (gone already) reaps the workers
    server.start()  # and a new one starts cleanly on the same data dir
    again = await asyncio.to_thread(ct.get_result, dispatch_id, False, server.addr)
    assert again.result == 10


async def test_no_scheduler_process_keeps_the_scheduler_in_the_dispatcher(
        server: ServerProcess) -> None:
    server.extra = ["--no-scheduler-process"]
    server.start()
    assert not [p for p in children(server.proc.pid)
                if "dispatcher.scheduler_process" in _cmdline(p)]
    dispatch_id = await asyncio.to_thread(ct.dispatch(two_node, dispatcher_addr=server.addr), 2, 3)
    result = await asyncio.to_thread(ct.get_result, dispatch_id, True, server.addr)
    assert result.status == ct.status.COMPLETED and result.result == 10


@ct.electron
def _total(xs):
    return sum(xs)


@ct.lattice
def _gated_sum(n, started, release):
    return add(gate(1, started, release), _total([identity(i) for i in range(n)]))


async def test_a_dispatcher_whose_scheduler_process_died_restarts_and_resumes(
        server: ServerProcess, tmp_path: Path) -> None:
    # A scheduler killed (out of memory, kill -9) leaves the client nothing to reach: before,
    # the server said ok while every new dispatch failed and the running one stayed RUNNING.
    server.start()
    [scheduler] = [p for p in children(server.proc.pid)
                   if "dispatcher.scheduler_process" in _cmdline(p)]
    started, release = tmp_path / "started", tmp_path / "release"
    dispatch_id = await asyncio.to_thread(
        ct.dispatch(_gated_sum, dispatcher_addr=server.addr), 20, str(started), str(release))
    await wait_until(started.exists, timeout=30)
    server.spawned += children(server.proc.pid)
    done = threading.Event()
    with ThreadPoolExecutor(1) as pool:  # started now, not when the loop next runs
        seen = pool.submit(_watch_the_window, server, done)
        os.kill(scheduler, signal.SIGKILL)

        def restarted() -> bool:  # the same process (covalent stop still finds it), a new cluster
            info = server.status()
            return info is not None and [p for p in children(server.proc.pid)
                                         if "dispatcher.scheduler_process" in _cmdline(p)
                                         and p != scheduler] != []
        try:
            await wait_until(restarted, timeout=60)
        finally:
            done.set()
        holders, refused = seen.result(timeout=10)
    assert server.proc.poll() is None
    # All along, the data dir's lock named this process and the port took connections: a
    # `covalent stop` or a client meanwhile found the server (before, both were turned away for
    # the seconds the new image took to start).
    assert holders == {server.proc.pid} and refused == 0
    server.spawned += children(server.proc.pid)
    release.touch()
    result = await asyncio.to_thread(ct.get_result, dispatch_id, True, server.addr)
    assert (result.status, result.result) == (ct.status.COMPLETED, 2 + sum(range(20)))
    assert "restarting the dispatcher" in server.log.read_text()
    fresh = await asyncio.to_thread(ct.dispatch(two_node, dispatcher_addr=server.addr), 2, 3)
    assert (await asyncio.to_thread(ct.get_result, fresh, True, server.addr)).result == 10


def _watch_the_window(server: ServerProcess, done: threading.Event) -> tuple[set[int | None], int]:
    """Until ``done``: who holds the data dir's lock, and how many connects were refused."""
    holders: set[int | None] = set()
    refused = 0
    while not done.wait(0.05):
        found = holder(server.data_dir)
        holders.add(found.pid if found is not None else None)
        try:
            socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
        except OSError:
            refused += 1
    return holders, refused


class _External:
    """``dask scheduler`` on a fixed port and one ``dask worker``, that a test kills and starts
    again on the same address (by PID; stopped at teardown)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port, self.env, self.procs = free_port(), env, []
        self.address = f"tcp://127.0.0.1:{self.port}"

    def start(self) -> None:
        quiet: dict[str, Any] = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL,
                                 "env": self.env, "cwd": REPO}
        self.procs = [subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host",
                                        "127.0.0.1", "--port", str(self.port), "--no-dashboard"],
                                       **quiet)]
        self.procs.append(subprocess.Popen(
            [sys.executable, "-m", "dask", "worker", self.address, "--nthreads", "2",
             "--no-nanny", "--host", "127.0.0.1", "--no-dashboard"], **quiet))

    def kill(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait(10)


async def test_a_dispatcher_on_an_external_scheduler_that_restarts_restarts_and_resumes(
        server: ServerProcess, tmp_path: Path) -> None:
    # Before, a scheduler started again at once left a client reconnected to a scheduler
    # without this dispatcher's plugins (every dispatch FAILED, "dropped 3 times"), and one
    # gone for longer a closed client (dispatches stuck RUNNING, /status a 500).
    external = _External(dict(server.env, PYTHONPATH=str(REPO)))
    external.start()
    try:
        server.extra, server.workers = ["--scheduler-address", external.address], 1
        server.start()
        pid = server.proc.pid
        started, release = tmp_path / "started", tmp_path / "release"
        dispatch_id = await asyncio.to_thread(
            ct.dispatch(_gated_sum, dispatcher_addr=server.addr), 5, str(started), str(release))
        await wait_until(started.exists, timeout=30)
        started.unlink()
        external.kill()
        external.start()  # at once: the client reconnects, to a scheduler of its own
        await wait_until(lambda: server.log.read_text().count("restarting the dispatcher") == 1,
                         timeout=60)
        await wait_until(started.exists, timeout=60)  # resumed: the gate runs again
        release.touch()
        result = await asyncio.to_thread(ct.get_result, dispatch_id, True, server.addr)
        assert (result.status, result.result) == (ct.status.COMPLETED, 2 + sum(range(5)))

        external.kill()  # and now for longer than the client waits to reconnect
        await wait_until(lambda: server.log.read_text().count("restarting the dispatcher") == 2,
                         timeout=60)
        external.start()
        await wait_until(lambda: (server.status() or {}).get("cluster", {}).get("workers") == 1,
                         timeout=60)
        fresh = await asyncio.to_thread(ct.dispatch(two_node, dispatcher_addr=server.addr), 2, 3)
        assert (await asyncio.to_thread(ct.get_result, fresh, True, server.addr)).result == 10
        assert server.proc.pid == pid and server.proc.poll() is None  # the same process
        assert "Traceback" not in server.log.read_text()
    finally:
        server.stop()
        external.kill()
