"""Node outputs go from the worker that made them to the store, never through the dispatcher.

Both ways a user runs it: the embedded cluster writing to the data dir, and an external
``dask scheduler`` with two ``dask worker`` processes writing to an S3-compatible server
(moto, on 127.0.0.1) named by ``--store-url``. In both, kill -9 of the dispatcher mid-run and
a restart re-run nothing that had completed: the restarted dispatcher hands the stored output
to the node that needs it by reference, and the worker loads it from the store.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import covalent as ct
from dispatcher.procinfo import bytes_read, peak_rss_mib, reset_peak_rss, rss_mib
from tests.conftest import dask_processes, s3_bucket, wait_until
from tests.faults.conftest import ServerProcess
from tests.tasks import size_once_released

pytestmark = [pytest.mark.slow, pytest.mark.processes, pytest.mark.timeout(240)]

MIB = 64


@ct.electron
def payload(mib, log):
    """``mib`` MiB of unique bytes; one line in ``log`` per run."""
    with open(log, "a") as fh:
        fh.write(f"{os.getpid()}\n")
    return os.urandom(mib << 20)


@ct.lattice
def make_then_measure(mib, log, release_file):
    return size_once_released(payload(mib, log), release_file)


def _node_status(addr: str, dispatch_id: str, name: str) -> str:
    r = ct.get_result(dispatch_id, dispatcher_addr=addr, workflow_output=False,
                      intermediate_outputs=False)
    return next(n["status"] for n in r.get_all_node_results() if n["node_name"] == name)


@pytest.fixture
def external(tmp_path: Path, server_env: dict[str, str]) -> Iterator[str]:
    """``dask scheduler`` and two ``dask worker`` processes; stopped by PID at teardown."""
    with dask_processes(tmp_path, server_env, [[], []]) as address:
        yield address


@pytest.fixture(params=["embedded", "external+s3"])
def setup(request: pytest.FixtureRequest, tmp_path: Path, server: ServerProcess
          ) -> tuple[ServerProcess, Any]:
    """A dispatcher and a function listing the stored blobs as (location, size)."""
    if request.param == "embedded":
        blobs = server.data_dir / "blobs"
        return server, lambda: [(str(p), p.stat().st_size) for p in blobs.rglob("*")
                                if p.is_file()]
    import s3fs

    endpoint = request.getfixturevalue("s3_endpoint")
    address = request.getfixturevalue("external")
    bucket, opts = s3_bucket(endpoint, tmp_path.name)
    server.extra = ["--scheduler-address", address, "--store-url", f"s3://{bucket}/outputs",
                    "--store-options", json.dumps(opts)]
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **opts)

    def listing() -> list[tuple[str, int]]:
        fs.invalidate_cache()
        return [(k, int(v["size"])) for k, v in fs.find(bucket, detail=True).items()]
    return server, listing


async def test_outputs_skip_the_dispatcher_and_survive_its_kill9(
        setup: tuple[ServerProcess, Any], tmp_path: Path) -> None:
    server, stored = setup
    server.start()
    log, release = tmp_path / "payload.log", tmp_path / "release"
    pid = server.proc.pid
    # What the dispatcher reads from files (rchar; socket receives are not counted there) and
    # its peak memory: an output that passed through it would show in one or the other.
    read_before = bytes_read(pid)
    assert read_before >= 0 and reset_peak_rss(pid)
    rss_before = rss_mib(pid)

    dispatch_id = await asyncio.to_thread(
        ct.dispatch(make_then_measure, dispatcher_addr=server.addr), MIB, str(log), str(release))

    async def payload_done() -> bool:
        status = await asyncio.to_thread(_node_status, server.addr, dispatch_id, "payload")
        return bool(status == ct.status.COMPLETED)
    await wait_until(payload_done, timeout=60, interval=0.1)
    # The worker wrote the output to the store; the dispatcher read a small fraction of it.
    big = [(where, size) for where, size in await asyncio.to_thread(stored) if size >= MIB << 20]
    assert len(big) == 1, await asyncio.to_thread(stored)
    assert bytes_read(pid) - read_before < (MIB << 20) // 8
    assert peak_rss_mib(pid) - rss_before < MIB / 4

    server.kill9()  # while `size_once_released` waits for its release file
    server.start()
    release.touch()
    result = await asyncio.wait_for(asyncio.to_thread(
        ct.get_result, dispatch_id, True, server.addr), 120)
    assert result.status == ct.status.COMPLETED, result.error
    assert result.result == MIB << 20
    assert len(log.read_text().splitlines()) == 1  # `payload` ran once, before the kill
    assert len([s for _, s in await asyncio.to_thread(stored) if s >= MIB << 20]) == 1

    # Read on request, streamed from the store through the dispatcher.
    node = next(n for n in await asyncio.to_thread(result.get_all_node_results)
                if n["node_name"] == "payload")
    assert isinstance(node["output"], bytes) and len(node["output"]) == MIB << 20
