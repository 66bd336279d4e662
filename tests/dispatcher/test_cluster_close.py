"""The embedded cluster's close is bounded: past it, its worker processes are killed."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import pytest

from dispatcher import app as app_module

pytestmark = [pytest.mark.slow]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a killed child not reaped yet is gone too
        return f.read().split()[2] != "Z"


async def test_a_cluster_that_does_not_close_in_time_has_its_workers_killed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from distributed import LocalCluster

    cluster = await LocalCluster(asynchronous=True, n_workers=2, threads_per_worker=1,
                                 dashboard_address=None, processes=True,
                                 # not Dask's default 8787, which another process may hold
                                 # (its retry leaks a socket, which fails the test)
                                 scheduler_kwargs={"dashboard": False,
                                                   "dashboard_address": "127.0.0.1:0"})
    pids = [n.process.process.pid for n in cluster.workers.values()]
    os.kill(pids[0], signal.SIGSTOP)  # its nanny waits 4 s for it before killing it itself
    monkeypatch.setattr(app_module, "CLOSE_S", 0.5)
    t = time.monotonic()
    await app_module._close_embedded(cluster)
    assert time.monotonic() - t < 3.0
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids):
        assert time.monotonic() < deadline, [p for p in pids if _alive(p)]
        await asyncio.sleep(0.05)


async def test_a_worker_the_embedded_cluster_lost_for_good_is_started_again() -> None:
    # Dask's SpecCluster closed a nanny whose worker was down when it looked, and never
    # replaced it: nodes that killed their workers left the cluster at 0 workers for good.
    import dask.config
    from distributed import Client, LocalCluster

    with dask.config.set({"distributed.deploy.lost-worker-timeout": "3650d"}):  # as embedded
        await _lost_and_found(LocalCluster, Client)


async def _lost_and_found(LocalCluster: Any, Client: Any) -> None:
    from dispatcher.relaunch import Relaunch
    from tests.conftest import wait_until

    async with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                            asynchronous=True, dashboard_address=":0") as cluster:
        async with Client(cluster, asynchronous=True) as client:
            relaunch = Relaunch()
            watcher = asyncio.create_task(app_module._watch_cluster(
                client, cluster.scheduler, relaunch, cluster))
            try:
                lost = next(iter(cluster.workers))
                await cluster.workers[lost].close()  # closed, still listed: as Dask leaves it

                def both_running() -> bool:
                    return len(cluster.scheduler.workers) == 2 and all(
                        str(w.status) == "Status.running" for w in cluster.workers.values())

                await wait_until(both_running, timeout=20)
                assert not relaunch.reason and not watcher.done()
            finally:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
