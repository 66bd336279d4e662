"""The dispatcher dies (kill -9) or is stopped (SIGTERM) mid-dispatch, then starts again."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

import covalent as ct
from tests.conftest import wait_until
from tests.faults.conftest import ServerProcess
from tests.tasks import gate, mark

pytestmark = [pytest.mark.slow, pytest.mark.processes, pytest.mark.timeout(180)]


def _workflow(tmp: Path):
    runs, started, release = str(tmp / "runs"), str(tmp / "started"), str(tmp / "release")

    @ct.lattice
    def wf(x):
        a = mark(runs, x)  # quick: COMPLETED before the crash
        b = gate(a, started, release)  # still running when the server dies
        return mark(runs, b) * 10

    return wf


async def _node_status(addr: str, dispatch_id: str, node_id: int) -> str:
    r = await asyncio.to_thread(ct.get_result, dispatch_id, False, addr)
    return str(r.get_node_result(node_id)["status"])


@pytest.mark.parametrize("how", ["kill -9", "covalent stop"])
async def test_dispatch_resumes_after_the_server_goes_away(how: str, server: ServerProcess,
                                                           tmp_path: Path) -> None:
    server.start()
    wf = _workflow(tmp_path)
    dispatch_id = await asyncio.to_thread(ct.dispatch(wf, dispatcher_addr=server.addr), 4)
    # node 0 = mark (a), node 2 = gate (b)
    await wait_until(lambda: (tmp_path / "started").exists(), timeout=30)
    await wait_until(lambda: _completed(server, dispatch_id, 0), timeout=30)
    # A client blocked in get_result(wait=True) across the outage
    waiting = asyncio.create_task(asyncio.to_thread(ct.get_result, dispatch_id, True, server.addr))

    if how == "kill -9":
        server.kill9()
    else:
        assert server.stop() == 0  # graceful: exits 0 with the dispatch unfinished
    (tmp_path / "started").unlink()
    row = _row(server.data_dir, dispatch_id)
    assert row["status"] == "RUNNING"  # recorded as unfinished, not lost, not COMPLETED

    server.start()
    await wait_until(lambda: (tmp_path / "started").exists(), timeout=30)  # gate runs again
    (tmp_path / "release").touch()
    result = await asyncio.wait_for(waiting, 60)  # the blocked client reconnected
    assert result.status == ct.status.COMPLETED, result.error
    assert result.result == 50
    assert result.get_node_result(0)["output"] == 4
    # mark(a) ran once before the crash and was not re-run; mark(b) ran once after
    assert len((tmp_path / "runs").read_text().splitlines()) == 2


async def _completed(server: ServerProcess, dispatch_id: str, node_id: int) -> bool:
    return await _node_status(server.addr, dispatch_id, node_id) == "COMPLETED"


def _row(data_dir: Path, dispatch_id: str) -> dict:
    db = sqlite3.connect(f"file:{data_dir / 'dispatches.db'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        row = db.execute("SELECT * FROM dispatches WHERE dispatch_id = ?", (dispatch_id,)).fetchone()
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return dict(row)
    finally:
        db.close()


async def test_blocked_client_gets_a_clear_error_if_the_server_stays_down(
        server: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from covalent._results_manager import results_manager

    monkeypatch.setattr(results_manager, "_RECONNECT_S", 1.0)
    server.start()
    wf = _workflow(tmp_path)
    dispatch_id = await asyncio.to_thread(ct.dispatch(wf, dispatcher_addr=server.addr), 1)
    await wait_until(lambda: (tmp_path / "started").exists(), timeout=30)
    waiting = asyncio.create_task(asyncio.to_thread(ct.get_result, dispatch_id, True, server.addr))
    await asyncio.sleep(0)  # let the thread start its request
    server.kill9()
    with pytest.raises(ct.errors.DispatcherUnavailableError, match=server.addr):
        await asyncio.wait_for(waiting, 30)
