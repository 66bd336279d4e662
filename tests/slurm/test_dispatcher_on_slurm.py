"""The dispatcher on SLURM (issue #16): ``covalent start --cluster dask_jobqueue.SLURMCluster
--cluster-kwargs ... --adapt 0:2`` on the session's real single-node SLURM. No job runs until a
dispatch needs workers; the workflow's electrons run inside SLURM jobs the cluster submitted;
``covalent stop`` closes the cluster, which cancels them."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import covalent as ct
from tests.conftest import free_port, wait_until
from tests.faults.conftest import Cli
from tests.slurm.conftest import Slurm
from tests.slurm.test_slurm import cluster_kwargs, no_job, squeue
from tests.tasks import slurm_job

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.processes, pytest.mark.timeout(180)]


@pytest.fixture
def cli(slurm: Slurm, tmp_path: Path, config_dir: Path) -> Iterator[Cli]:
    """``covalent ...`` with SLURM_CONF set (the session fixture put it in os.environ);
    whatever server it started is stopped at teardown."""
    env = dict(os.environ, COVALENT_DATA_DIR=str(tmp_path / "data"),
               COVALENT_CONFIG_DIR=str(config_dir))
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    c = Cli(env, tmp_path / "data")
    yield c
    c.stop_server(timeout=30)


async def test_a_workflow_runs_in_slurm_jobs_adapted_from_zero(slurm: Slurm, cli: Cli,
                                                               tmp_path: Path) -> None:
    from covalent import api
    from covalent.config import client_config

    kwargs = json.dumps(cluster_kwargs(slurm, tmp_path))
    out = await asyncio.to_thread(cli, "start", "--port", str(free_port()), "--cluster",
                                  "dask_jobqueue.SLURMCluster", "--cluster-kwargs", kwargs,
                                  "--adapt", "0:2")
    assert out.returncode == 0, out.stderr + out.stdout
    assert "dask_jobqueue.SLURMCluster, adaptive 0..2 workers" in out.stdout
    cli.server_pid()
    info = await asyncio.to_thread(api.request_json, client_config(), "GET", "/status")
    assert info["cluster"]["manager"] == "dask_jobqueue.SLURMCluster"
    assert info["cluster"]["workers"] == 0 and await squeue(slurm) == []

    @ct.lattice
    def wf(n):
        return [slurm_job(i) for i in range(n)]

    dispatch_id = await asyncio.to_thread(ct.dispatch(wf), 4)
    result = await asyncio.wait_for(asyncio.to_thread(ct.get_result, dispatch_id, True), 120)
    assert result.status == "COMPLETED", result.error
    assert sorted(i for i, _, _ in result.result) == [0, 1, 2, 3]
    assert {host for _, host, _ in result.result} == {slurm.node}
    jobs = {job for _, _, job in result.result}
    assert None not in jobs, "an electron ran outside a SLURM job"

    shown = (await asyncio.to_thread(cli, "status")).stdout
    assert "dask_jobqueue.SLURMCluster, adaptive 0..2 workers" in shown
    out = await asyncio.to_thread(cli, "stop", "--timeout", "30")
    assert "stopped" in out.stdout
    await wait_until(lambda: no_job(slurm), timeout=30, interval=0.2)  # closing cancelled them
