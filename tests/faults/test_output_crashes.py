"""A worker killed while it writes a large output to the store (issue #23).

Storing an output: the value is pickled into a temporary file in the store as it is hashed,
the file is renamed to its content address, and the outcome travels with the task's completion;
the dispatcher records COMPLETED only then. A worker killed mid-write leaves a temporary file
and no outcome: Dask runs the node again elsewhere, which stores the output whole; the
temporary file is removed when the dispatcher starts again (nothing else writes then).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import covalent as ct
from tests.faults.conftest import REPO, ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.processes, pytest.mark.timeout(180)]

MIB = 24


class KillsItsPickler:
    """Kills the process pickling it, the first time (``marker`` absent): placed after a large
    array in a list, the array is half the file when the worker dies."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        if not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return (KillsItsPickler, (self.marker,))


@ct.electron
def large(mib: int, marker: str, runs: str) -> list[Any]:
    with open(runs, "a") as fh:
        fh.write(f"{os.getpid()}\n")
    return [np.full(mib << 17, 1.0), KillsItsPickler(marker)]


@ct.electron
def total(parts: list[Any]) -> float:
    return float(parts[0].sum())


@ct.lattice
def workflow(mib: int, marker: str, runs: str) -> float:
    return total(large(mib, marker, runs))


@pytest.fixture
def output_server(tmp_path: Path) -> Iterator[ServerProcess]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["COVALENT_CONFIG_DIR"] = str(tmp_path / "config")
    s = ServerProcess(tmp_path / "data", env, workers=2)
    s.start()
    yield s
    s.stop()


def _files(blobs: Path) -> tuple[list[Path], list[Path]]:
    """(whole blobs over MIB MiB, temporary files) in the store."""
    files = [p for p in blobs.rglob("*") if p.is_file()]
    return ([p for p in files if not p.name.startswith(".tmp-") and p.stat().st_size >= MIB << 20],
            [p for p in files if p.name.startswith(".tmp-")])


async def test_a_worker_killed_mid_write_leaves_one_whole_output(
        output_server: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COVALENT_TOKEN", output_server.token)
    marker, runs = tmp_path / "killed", tmp_path / "runs"
    addr = output_server.addr
    dispatch_id = await asyncio.to_thread(ct.dispatch(workflow, dispatcher_addr=addr),
                                          MIB, str(marker), str(runs))
    result = await asyncio.to_thread(ct.get_result, dispatch_id, True, addr)
    assert result.status == ct.status.COMPLETED, result.error
    assert result.result == float(MIB << 17)
    killed = int(marker.read_text())
    pids = runs.read_text().split()
    assert len(pids) == 2 and pids[0] == str(killed) != pids[1]  # ran again on the other worker
    node = result.get_node_result(0)
    assert node["status"] == "COMPLETED" and node["output"][0].shape == (MIB << 17,)

    blobs = output_server.data_dir / "blobs"
    whole, partial = _files(blobs)
    assert len(whole) == 1  # the second run's, whole
    assert len(partial) == 1 and partial[0].stat().st_size < whole[0].stat().st_size

    assert output_server.stop() == 0
    output_server.start()
    whole_after, partial_after = _files(blobs)
    assert whole_after == whole and partial_after == []  # swept when the dispatcher started
    again = await asyncio.to_thread(ct.get_result, dispatch_id, False, addr)
    assert again.get_node_result(0)["output"][0].sum() == float(MIB << 17)
