"""A full disk (here: a file size limit on the dispatcher process) loses no record."""

from __future__ import annotations

import asyncio
import resource
from pathlib import Path

import pytest

import covalent as ct
from tests.conftest import auth_headers, wait_until
from tests.stores import rows
from tests.faults.conftest import ServerProcess
from tests.tasks import add, big_bytes, chatter

pytestmark = [pytest.mark.slow, pytest.mark.processes, pytest.mark.timeout(240),
              pytest.mark.all_stores]

LIMIT = 6 << 20  # no file the dispatcher writes may grow past 6 MiB


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


@ct.lattice
def small(x):
    return add(x, 1)


@ct.lattice
def big(mib):
    return big_bytes(mib)


@ct.lattice
def noisy(kib):
    return chatter(kib)


async def _run(addr: str, lattice, arg) -> ct.Result:
    dispatch_id = await asyncio.to_thread(ct.dispatch(lattice, dispatcher_addr=addr), arg)
    return await asyncio.wait_for(asyncio.to_thread(ct.get_result, dispatch_id, True, addr), 60)


async def test_full_store_fails_what_does_not_fit_and_keeps_every_record(
        server: ServerProcess, store_kind: str) -> None:
    server.start(preexec=_limit_file_size)
    first = await _run(server.addr, small, 1)
    assert first.result == 2

    # An output larger than any file may be: its node fails with the reason, nothing is lost.
    r = await _run(server.addr, big, 8)
    assert r.status == ct.status.FAILED
    node = r.get_node_result(0)
    assert node["status"] == "FAILED" and "could not store" in node["error"]
    assert "File too large" in node["error"] or "full" in node["error"]
    assert "could not store" in r.error
    assert (await _run(server.addr, small, 2)).result == 3  # still serving

    # Fill the database itself with what nodes print (outputs go to blob files, each below the
    # limit): each dispatch either stores, fails its node, or is refused. (A PostgreSQL server
    # writes its own files, out of reach of this process's limit: its DiskFull is StoreFull,
    # tests/dispatcher/test_store_errors.py.)
    refused = failed = 0
    for _ in range(60 if store_kind == "sqlite" else 0):
        try:
            r = await _run(server.addr, noisy, 200)
        except ct.errors.StorageFullError as exc:  # refused at submit, or reported while waiting
            assert "free space" in str(exc) or "cannot write to its store" in str(exc)
            refused += 1
            break
        if r.status == ct.status.FAILED:
            assert "could not store" in r.error
            failed += 1
            if failed >= 3:
                break
        else:
            assert r.status == ct.status.COMPLETED and r.result == 200
    assert refused or failed or store_kind != "sqlite"
    assert server.status() is not None  # the server answers throughout

    assert server.stop() == 0
    server.start()  # no limit now: everything recorded before is intact, and new work runs
    again = await asyncio.to_thread(ct.get_result, first.dispatch_id, False, server.addr)
    assert again.result == 2 and again.status == ct.status.COMPLETED
    assert (await _run(server.addr, small, 5)).result == 6
    await wait_until(lambda: asyncio.to_thread(_nothing_running, server), timeout=60)
    assert len(rows(server.data_dir, "SELECT * FROM dispatches")) >= 3  # SQLite: intact too


def _nothing_running(server: ServerProcess) -> bool:
    import json
    import urllib.request

    req = urllib.request.Request(server.url + "/api/v1/dispatches?status=RUNNING",
                                 headers=auth_headers())
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())["dispatches"] == []
