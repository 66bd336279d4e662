"""Real processes: the CLI daemon, and the server on an external `dask scheduler` + 2 workers.

Every process is started here and stopped here, by the PID we got when starting it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import covalent as ct
from dispatcher.instance import holder
from tests.conftest import auth_headers, free_port, stop_processes, wait_until
from tests.tasks import add, worker_pid

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.processes]


@pytest.fixture
def env(tmp_path: Path, config_dir: Path) -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    e["COVALENT_DATA_DIR"] = str(tmp_path / "data")
    e["COVALENT_CONFIG_DIR"] = str(config_dir)
    return e


@pytest.fixture
def spawn(env: dict[str, str]) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start processes through the returned list; all are stopped by PID at teardown."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    stop_processes(procs)


def status(url: str) -> dict:
    req = urllib.request.Request(url + "/api/v1/status", headers=auth_headers())
    with urllib.request.urlopen(req, timeout=2) as resp:
        return json.loads(resp.read())


def answers(url: str) -> dict | None:
    try:
        return status(url)
    except OSError:
        return None


async def test_scale_out_spreads_tasks_over_two_dask_workers(env, spawn, tmp_path) -> None:
    sched_port, port = free_port(), free_port()
    sched = f"tcp://127.0.0.1:{sched_port}"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env, "cwd": tmp_path}
    spawn.append(subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1",
                                   "--port", str(sched_port), "--no-dashboard"], **quiet))
    workers = [subprocess.Popen([sys.executable, "-m", "dask", "worker", sched, "--nthreads", "1",
                                 "--no-nanny", "--host", "127.0.0.1", "--no-dashboard"], **quiet)
               for _ in range(2)]
    spawn.extend(workers)
    spawn.append(subprocess.Popen([sys.executable, "-m", "dispatcher", "--port", str(port),
                                   "--scheduler-address", sched], **quiet))
    url = f"http://127.0.0.1:{port}"
    await wait_until(lambda: asyncio.to_thread(
        lambda: (answers(url) or {}).get("cluster", {}).get("workers") == 2), timeout=30)

    @ct.lattice
    def spread(n):
        return [worker_pid(i) for i in range(n)]

    addr = f"127.0.0.1:{port}"
    dispatch_id = await asyncio.to_thread(ct.dispatch(spread, dispatcher_addr=addr), 8)
    result = await asyncio.to_thread(ct.get_result, dispatch_id, True, addr)
    assert result.status == "COMPLETED", result.error
    assert set(result.result) == {w.pid for w in workers}


def covalent(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dispatcher.cli", *args], env=env, text=True,
                          capture_output=True, timeout=90, check=False)


async def test_cli_start_status_stop_start_keeps_results(env, tmp_path) -> None:
    port = free_port()
    data = tmp_path / "data"
    try:
        out = await asyncio.to_thread(covalent, env, "start", "--port", str(port), "--workers", "1",
                                      "--threads-per-worker", "2")
        assert out.returncode == 0, out.stderr + out.stdout
        assert f"http://127.0.0.1:{port}" in out.stdout and "Dask dashboard: http://" in out.stdout

        @ct.lattice
        def wf(x):
            return add(x, 1)

        # no dispatcher_addr: the SDK finds the server through the config `covalent start` wrote
        dispatch_id = await asyncio.to_thread(ct.dispatch(wf), 41)
        result = await asyncio.to_thread(ct.get_result, dispatch_id, True)
        assert result.result == 42

        out = await asyncio.to_thread(covalent, env, "status")
        assert "running at" in out.stdout and "Running dispatches: 0" in out.stdout
        assert f"Workers reach the dispatcher at: http://127.0.0.1:{port} " in out.stdout
        out = await asyncio.to_thread(covalent, env, "stop")
        assert "stopped" in out.stdout and holder(data) is None
        out = await asyncio.to_thread(covalent, env, "status")
        assert out.returncode == 1 and "not running" in out.stdout

        out = await asyncio.to_thread(covalent, env, "start", "--port", str(port), "--workers", "1")
        assert out.returncode == 0, out.stderr + out.stdout
        again = await asyncio.to_thread(ct.get_result, dispatch_id)
        assert again.status == "COMPLETED" and again.result == 42
        logs = await asyncio.to_thread(covalent, env, "logs")
        assert logs.returncode == 0 and logs.stdout.strip()
    finally:
        await asyncio.to_thread(covalent, env, "stop")
        left = holder(data)
        if left is not None:  # stop failed: kill the process that holds the data dir's lock
            os.kill(left.pid, signal.SIGKILL)
