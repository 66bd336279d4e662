"""dask_jobqueue.SLURMCluster with adaptive scaling from 0, on the session's real single-node SLURM."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from distributed import Client

from tests.conftest import wait_until
from tests.slurm.conftest import Slurm

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(120)]


def task() -> Callable[[int], tuple[int, str, str | None]]:
    """A task saying which host and SLURM job ran it; local, so cloudpickle ships it by value
    (the jobs run in tmp_path and cannot import the tests package)."""

    def where(i: int) -> tuple[int, str, str | None]:
        return i, socket.gethostname(), os.environ.get("SLURM_JOB_ID")

    return where


def cluster_kwargs(slurm: Slurm, tmp_path: Path) -> dict[str, Any]:
    """What a dispatcher would pass in ``--cluster-kwargs`` on this machine (plus test-only paths)."""
    return {
        "cores": 1,
        "processes": 1,
        "memory": "1GiB",
        "walltime": "00:10:00",
        "queue": slurm.partition,
        "python": sys.executable,
        # Scheduler and workers on one host: loopback, and no dashboard on the fixed port 8787.
        "scheduler_options": {"host": "127.0.0.1", "dashboard_address": ":0"},
        "local_directory": str(tmp_path / "worker-space"),
        "log_directory": str(tmp_path / "job-logs"),
        # The job runs in the submitter's cwd unless told otherwise; keep it out of the repository.
        "job_extra_directives": [f"--chdir={tmp_path}"],
    }


@pytest.fixture
async def cluster(slurm: Slurm, tmp_path: Path) -> AsyncIterator[Any]:
    from dask_jobqueue import SLURMCluster

    async with SLURMCluster(asynchronous=True, **cluster_kwargs(slurm, tmp_path)) as c:
        yield c
    await wait_until(lambda: no_job(slurm), timeout=30, interval=0.2)  # closing scancels every job


async def squeue(slurm: Slurm) -> list[str]:
    return await asyncio.to_thread(slurm.job_ids)


async def no_job(slurm: Slurm) -> bool:
    return not await squeue(slurm)


async def test_adapt_from_zero_runs_tasks_in_slurm_jobs(slurm: Slurm, cluster: Any) -> None:
    adaptive = cluster.adapt(minimum=0, maximum=2)
    assert await adaptive.target() == 0
    await adaptive.adapt()  # one full decision, as the periodic callback makes it: nothing to start
    assert await squeue(slurm) == [] and not cluster.workers

    async with Client(cluster, asynchronous=True, set_as_default=False) as client:
        results = await client.gather(client.map(task(), range(4), pure=False))
        jobs = {w.job_id for w in cluster.workers.values()}

    assert sorted(i for i, _, _ in results) == [0, 1, 2, 3]
    assert {host for _, host, _ in results} == {slurm.node}
    ran_in = {job for _, _, job in results}
    assert None not in ran_in, "a task ran outside a SLURM job"
    assert ran_in <= jobs and 1 <= len(jobs) <= 2


async def test_adapt_scales_back_to_zero_when_idle(slurm: Slurm, cluster: Any) -> None:
    cluster.adapt(minimum=0, maximum=2, interval="200ms", wait_count=2)
    async with Client(cluster, asynchronous=True, set_as_default=False) as client:
        i, _, job = await client.submit(task(), 0, pure=False)
        assert i == 0 and job in await squeue(slurm)
        await wait_until(lambda: no_job(slurm), timeout=30, interval=0.2)
        assert not cluster.workers
