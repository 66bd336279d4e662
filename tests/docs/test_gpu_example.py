"""examples/gpu_executor.py on a cluster with a (fake) GPU worker: the training electrons run
only there, the rest anywhere. The GPU worker advertises ``--resources GPU=1`` and sets
CUDA_VISIBLE_DEVICES, as a worker on a GPU machine would; no GPU is used."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.conftest import server_env  # noqa: F401  (fixture)

from tests.conftest import free_port, stop_processes
from tests.docs.conftest import EXAMPLES
from tests.faults.conftest import ServerProcess


@pytest.fixture
def gpu_cluster(server_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """``dask scheduler``, a worker named gpu-0 with a GPU resource and one named cpu-0."""
    address = f"tcp://127.0.0.1:{free_port()}"
    cpu_env = {k: v for k, v in server_env.items() if k != "CUDA_VISIBLE_DEVICES"}

    def start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)

    worker = [sys.executable, "-m", "dask", "worker", address, "--nthreads", "1", "--no-nanny",
              "--host", "127.0.0.1", "--no-dashboard"]
    procs = [start([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1",
                    "--port", address.rsplit(":", 1)[1], "--no-dashboard"], cpu_env)]
    try:
        procs.append(start([*worker, "--name", "gpu-0", "--resources", "GPU=1"],
                           dict(cpu_env, CUDA_VISIBLE_DEVICES="0")))
        procs.append(start([*worker, "--name", "cpu-0"], cpu_env))
        yield address
    finally:
        stop_processes(procs)


@pytest.mark.slow
def test_gpu_tagged_electrons_run_on_the_gpu_worker(gpu_cluster: str, server_env: dict[str, str],
                                                    tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", server_env, workers=2,
                           extra=["--scheduler-address", gpu_cluster])
    server.start()
    try:
        env = dict(server.env, COVALENT_DISPATCHER_ADDR=server.addr)
        env.pop("CUDA_VISIBLE_DEVICES", None)
        proc = subprocess.run([sys.executable, str(EXAMPLES / "gpu_executor.py")], env=env,
                              cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert "GPU workers: ['gpu-0']" in lines
    assert "COMPLETED" in lines
    trained = [ast.literal_eval(line) for line in lines if line.startswith("{'shard'")]
    assert [t["shard"] for t in trained] == [0.0, 1.0, 2.0, 3.0]
    assert {(t["device"], t["worker"]) for t in trained} == {("cuda", "gpu-0")}
    assert "ran on: ['gpu-0'] devices: ['cuda']" in lines
