"""One bad node never stops the dispatcher (issue #11): whatever user code prints or raises
is recorded (escaped, bounded) as that node's outcome, and the next dispatch runs."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import covalent as ct
from tests.conftest import new_database
from tests.faults.conftest import REPO, ServerProcess
from tests.tasks import (fail_on_listing, identity, interrupt, print_a_lot, print_surrogate,
                         recurse_forever)

pytestmark = [pytest.mark.slow, pytest.mark.processes, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def bad_server(tmp_path_factory: pytest.TempPathFactory, store_kind: str,
               request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("bad")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["COVALENT_CONFIG_DIR"] = str(tmp / "config")
    db_url, drop_database = new_database(request, store_kind)
    env["COVALENT_DB_URL"] = db_url
    s = ServerProcess(tmp / "data", env, workers=1)
    s.start()
    yield s
    s.stop()
    drop_database()


@pytest.fixture(autouse=True)
def _token(bad_server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COVALENT_TOKEN", bad_server.token)


async def _run(server: ServerProcess, lattice, *args):
    dispatch_id = await asyncio.to_thread(ct.dispatch(lattice, dispatcher_addr=server.addr), *args)
    return await asyncio.wait_for(
        asyncio.to_thread(ct.get_result, dispatch_id, True, server.addr), 120)


@ct.lattice
def _one(x):
    return identity(x)


async def _still_works(server: ServerProcess) -> None:
    result = await _run(server, _one, 5)
    assert (result.status, result.result) == ("COMPLETED", 5)


async def test_a_lone_surrogate_in_stdout(bad_server: ServerProcess) -> None:
    @ct.lattice
    def wf(x):
        return print_surrogate(x)

    result = await _run(bad_server, wf, 1)
    assert result.status == "COMPLETED" and result.result == 1
    assert result.get_node_result(0)["stdout"] == "x \\udc80 y\n"
    await _still_works(bad_server)


async def test_an_error_naming_a_file_that_is_not_utf8(bad_server: ServerProcess,
                                                       tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d").joinpath(os.fsdecode(b"bad\xffname")).touch()

    @ct.lattice
    def wf(d):
        return fail_on_listing(d)

    result = await _run(bad_server, wf, str(tmp_path / "d"))
    assert result.status == "FAILED"
    assert "FileNotFoundError: cannot read bad\\udcffname" in result.get_node_result(0)["error"]
    await _still_works(bad_server)


async def test_a_node_printing_a_gigabyte(bad_server: ServerProcess) -> None:
    @ct.lattice
    def wf(n):
        return print_a_lot(n)

    result = await _run(bad_server, wf, 1024)
    assert result.status == "COMPLETED" and result.result == 1024
    out = result.get_node_result(0)["stdout"]
    assert len(out) < 1.1 * (1 << 20)  # head and tail of about 1 MiB, not a gigabyte
    assert out.startswith("00000000y") and out.rstrip().split("\n")[-1].startswith("00016383y")
    # one marker, whose count is what was printed and not kept (it was counted wrong when the
    # store cut the captured text again: "[... 40 characters left out ...]")
    [(head, left_out, tail)] = re.findall(r"(?s)\A(.*)\n\[\.\.\. (\d+) characters left out \.\.\.\]\n(.*)\Z", out)
    assert len(head) + int(left_out) + len(tail) == 1024 * 16 * (8 + (64 << 10) + 1)
    await _still_works(bad_server)


async def test_infinite_recursion_fails_its_node_and_its_descendant_never_runs(
        bad_server: ServerProcess) -> None:
    @ct.lattice
    def wf(x):
        return identity(recurse_forever(x))

    result = await _run(bad_server, wf, 0)
    assert result.status == "FAILED"
    node = result.get_node_result(0)
    assert node["status"] == "FAILED" and "RecursionError" in node["error"]
    assert "Node 0 (recurse_forever) failed: RecursionError: maximum recursion depth" in result.error
    assert result.get_node_result(2)["status"] == "NEW_OBJECT"  # never ran
    await _still_works(bad_server)


async def test_keyboard_interrupt_in_an_electron_is_a_plain_failure(
        bad_server: ServerProcess) -> None:
    @ct.lattice
    def wf(x):
        return interrupt(x)

    result = await _run(bad_server, wf, 0)
    assert result.status == "FAILED"
    assert "KeyboardInterrupt: from an electron" in result.error
    assert "KilledWorker" not in result.error
    await _still_works(bad_server)


async def test_after_all_that_a_restart_resumes_nothing_bad(bad_server: ServerProcess) -> None:
    assert bad_server.stop() == 0
    bad_server.start()
    info = bad_server.status()
    assert info is not None and info["running"] == [] and not info["store"]["write_error"]
    await _still_works(bad_server)
