"""A worker whose event loop is stuck must not hold up a cancel (``Runner.CANCEL_ASK_S``).

A cancel tells every worker which nodes never to start and to stop (``Client.run``), then,
after its answer, registers that table for later workers (``register_plugin``) under the
runner's cancel lock; the scheduler answers both once every worker has. A worker whose event
loop is held (a C call that keeps the GIL, a machine swapping) answered neither until it woke:
the registration held the lock, and the next cancel waited for it. Real processes: a ``dask scheduler`` and two workers.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from distributed import Client

import covalent as ct
from dispatcher import runner as runner_module
from dispatcher.app import create_app
from tests.conftest import dask_processes, in_process_settings, wait_until
from tests.tasks import gate, hold_event_loop

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.processes, pytest.mark.timeout(120)]
HELD_S = 10.0  # how long the stuck worker's loop is held: far past the 1 s bound below


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with dask_processes(REPO, env, [["--name", "free"], ["--name", "stuck"]]) as address:
        yield address


async def test_a_cancel_is_answered_while_a_worker_event_loop_is_stuck(
        cluster: str, config_dir: Path, tmp_path: Path, aiohttp_client: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner_module, "CANCEL_ASK_S", 1.0)
    app = create_app(in_process_settings(tmp_path / "data", address=cluster))
    server = await aiohttp_client(app)
    addr = f"127.0.0.1:{server.port}"
    pinned = ct.electron(gate.function, executor=ct.executor.DaskExecutor(workers=["free"]))

    @ct.lattice
    def wf(started: str, release: str) -> Any:
        return pinned(1, started, release)

    started, release, awake = tmp_path / "started", tmp_path / "release", tmp_path / "awake"
    async with Client(cluster, asynchronous=True) as client:
        await client.wait_for_workers(2)
        stuck = next(a for a, w in client.scheduler_info()["workers"].items()
                     if w["name"] == "stuck")
        first, second = [await asyncio.to_thread(ct.dispatch(wf, dispatcher_addr=addr),
                                                 str(started), str(release)) for _ in range(2)]
        await wait_until(started.exists, timeout=30, interval=0.05)  # (the second waits)
        await client.run(hold_event_loop, HELD_S, str(awake), workers=[stuck], wait=False)
        for dispatch_id in (first, second):  # the second cancel comes after the first's tail
            await asyncio.to_thread(ct.cancel, dispatch_id, None, addr)
            assert not awake.exists(), "a cancel waited for the stuck worker to wake up"
        for dispatch_id in (first, second):
            result = await asyncio.wait_for(
                asyncio.to_thread(ct.get_result, dispatch_id, True, addr), 30)
            assert result.status == ct.status.CANCELLED
            assert result.get_node_result(0)["status"] == ct.status.CANCELLED
        assert not awake.exists()  # all of it while the other worker was stuck
        await wait_until(awake.exists, timeout=HELD_S + 30, interval=0.1)  # before teardown
