"""The embedded scheduler in a process of its own (the default): it works, talks over Unix sockets, and never
outlives the dispatcher (a kill -9 included); --no-scheduler-process keeps it in the dispatcher."""

from __future__ import annotations

import asyncio
import signal

import pytest

import covalent as ct
from dispatcher.procinfo import alive, children
from tests.conftest import wait_until
from tests.faults.conftest import ServerProcess, _cmdline
from tests.tasks import two_node

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
