"""The dispatcher dies (kill -9) or is stopped (SIGTERM) mid-dispatch, then starts again."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import covalent as ct
from tests.conftest import wait_until
from tests.stores import rows
from tests.faults.conftest import ServerProcess
from tests.tasks import add, fail, gate, mark

pytestmark = [pytest.mark.slow, pytest.mark.processes, pytest.mark.timeout(180),
              pytest.mark.all_stores]


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
        # without waiting for the running node: its worker closed, not killed after 4 s
        assert "still alive after" not in server.log.read_text()
    (tmp_path / "started").unlink()
    row = _row(server.data_dir, dispatch_id)
    assert row["status"] == "RUNNING"  # recorded as unfinished, not lost, not COMPLETED
    assert row["start_time"] and row["end_time"] is None
    # One asking while it is down, showing progress: it failed at once with
    # DispatcherUnavailableError where get_result(wait=True) alone waits
    asking = ThreadPoolExecutor(1)  # (a thread of its own asks now, not once the loop runs)
    shown = asyncio.wrap_future(asking.submit(ct.get_result, dispatch_id, True, server.addr,
                                              progress=True))

    server.start()
    await wait_until(lambda: (tmp_path / "started").exists(), timeout=30)  # gate runs again
    if server.env.get("COVALENT_DB_URL"):
        # A replica on PostgreSQL started again on the data dir of one killed takes what that
        # one held at once (it waited out the lease, 10 s); one stopped had given it up.
        took = "taking over at once what" in server.log.read_text()
        assert took == (how == "kill -9"), server.log.read_text()[-3000:]
    (tmp_path / "release").touch()
    result = await asyncio.wait_for(waiting, 60)  # the blocked client reconnected
    assert result.status == ct.status.COMPLETED, result.error
    assert result.result == 50
    assert (await asyncio.wait_for(shown, 60)).result == 50
    asking.shutdown()
    # It started when it first started: the resume did not start it anew (it did, and a
    # dispatch taken over showed a runtime of 0.02 s).
    assert _row(server.data_dir, dispatch_id)["start_time"] == row["start_time"]
    assert result.get_node_result(0)["output"] == 4
    assert result.get_node_result(0)["stdout"] == "marked 4\n"  # what it printed, kept
    # mark(a) ran once before the crash and was not re-run; mark(b) ran once after
    assert len((tmp_path / "runs").read_text().splitlines()) == 2


async def _completed(server: ServerProcess, dispatch_id: str, node_id: int) -> bool:
    return await _node_status(server.addr, dispatch_id, node_id) == "COMPLETED"


def _row(data_dir: Path, dispatch_id: str) -> dict:
    [row] = rows(data_dir, "SELECT * FROM dispatches WHERE dispatch_id = ?", (dispatch_id,))
    return row


async def test_blocked_client_gets_a_clear_error_if_the_server_stays_down(
        server: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from covalent._results_manager import results_manager

    monkeypatch.setattr(results_manager, "_RECONNECT_S", 1.0)
    server.start()
    wf = _workflow(tmp_path)
    dispatch_id = await asyncio.to_thread(ct.dispatch(wf, dispatcher_addr=server.addr), 1)
    await wait_until(lambda: (tmp_path / "started").exists(), timeout=30)
    waiting = asyncio.create_task(asyncio.to_thread(ct.get_result, dispatch_id, True, server.addr))
    server.kill9()
    with pytest.raises(ct.errors.DispatcherUnavailableError, match=server.addr):
        await asyncio.wait_for(waiting, 30)


@pytest.mark.parametrize("how", ["kill -9", "covalent stop"])
async def test_get_result_called_while_the_server_is_down_waits_for_it(
        how: str, server: ServerProcess, tmp_path: Path) -> None:
    server.start()
    wf = _workflow(tmp_path)
    dispatch_id = await asyncio.to_thread(ct.dispatch(wf, dispatcher_addr=server.addr), 2)
    await wait_until(lambda: (tmp_path / "started").exists(), timeout=30)
    if how == "kill -9":
        server.kill9()
    else:
        assert server.stop() == 0
    (tmp_path / "started").unlink()
    # Nobody answers now: the client keeps trying (bounded) instead of raising at once.
    waiting = asyncio.create_task(asyncio.to_thread(ct.get_result, dispatch_id, True, server.addr))
    server.start()
    await wait_until(lambda: (tmp_path / "started").exists(), timeout=30)
    (tmp_path / "release").touch()
    result = await asyncio.wait_for(waiting, 60)
    assert result.status == "COMPLETED" and result.result == 30


async def test_a_stop_does_not_wait_for_clients_long_polling_for_a_dispatch_end(
        server: ServerProcess, tmp_path: Path) -> None:
    """A client waiting for a dispatch to end (a long poll of 100 s) is answered at once when
    the server is stopped, with the status it has (RUNNING), and the stop takes seconds; it
    used to wait until the poll ran out (up to ``long_poll_max_s``, 120 s)."""
    server.start()
    dispatch_id = await asyncio.to_thread(ct.dispatch(_workflow(tmp_path), dispatcher_addr=server.addr), 1)
    await wait_until(lambda: (tmp_path / "started").exists(), timeout=30)
    before = _http_connections(server)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=150)
    conn.request("GET", f"/api/v1/dispatches/{dispatch_id}/status?wait=100",
                 headers={"Authorization": f"Bearer {server.token}"})
    await wait_until(lambda: _http_connections(server) > before, timeout=10)  # it is being served
    answer = asyncio.create_task(asyncio.to_thread(conn.getresponse))
    # 0: it exited on SIGTERM; killed after 30 s, it waited for the poll (aiohttp's limit, 60 s)
    assert server.stop(timeout=30) == 0
    resp = await asyncio.wait_for(answer, 10)
    assert resp.status == 200 and json.loads(resp.read())["status"] == "RUNNING"
    conn.close()


def _http_connections(server: ServerProcess) -> float:
    """The server's open HTTP connections (its metrics), this request's own left out."""
    req = urllib.request.Request(server.url + "/metrics",
                                 headers={"Authorization": f"Bearer {server.token}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        text = resp.read().decode()
    [line] = [ln for ln in text.splitlines() if ln.startswith('covalent_open_connections{kind="http"}')]
    return float(line.split()[-1]) - 1


@ct.lattice
def _pair(x):
    return add(x, 1)


async def test_every_acknowledged_dispatch_survives_kill9_during_a_submit_burst(
        server: ServerProcess) -> None:
    server.start()
    acknowledged: list[tuple[str, int]] = []
    lock, stop = threading.Lock(), threading.Event()

    def submit(worker: int) -> None:
        i = 0
        while not stop.is_set():
            x = worker * 10_000 + i
            try:
                dispatch_id = ct.dispatch(_pair, dispatcher_addr=server.addr)(x)
            except (ct.errors.DispatcherUnavailableError, ct.errors.DispatcherError):
                return  # the server died under this request: it was never acknowledged
            with lock:
                acknowledged.append((dispatch_id, x))
            i += 1

    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(submit, w) for w in range(16)]
        await wait_until(lambda: len(acknowledged) >= 60, timeout=60)
        server.kill9()
        stop.set()
        await asyncio.to_thread(lambda: [f.result() for f in futures])
    server.start()
    for dispatch_id, x in acknowledged:
        result = await asyncio.to_thread(ct.get_result, dispatch_id, True, server.addr)
        assert (result.status, result.result) == ("COMPLETED", x + 1), dispatch_id


def _child_workflow(tmp: Path):
    runs, started, release = str(tmp / "runs"), str(tmp / "started"), str(tmp / "release")

    @ct.electron
    @ct.lattice
    def child(x):
        return gate(mark(runs, x), started, release)

    @ct.lattice
    def parent(x):
        return child(x)

    return parent


async def test_kill9_while_a_sublattice_child_runs_starts_no_second_child(
        server: ServerProcess, tmp_path: Path) -> None:
    server.start()
    dispatch_id = await asyncio.to_thread(
        ct.dispatch(_child_workflow(tmp_path), dispatcher_addr=server.addr), 5)
    await wait_until(lambda: (tmp_path / "started").exists(), timeout=30)  # inside the child

    def child_marked() -> bool:
        parent = ct.get_result(dispatch_id, dispatcher_addr=server.addr)
        child = parent.get_node_result(0)["sublattice_result"]
        return child is not None and child.get_node_result(0)["status"] == "COMPLETED"

    await wait_until(lambda: asyncio.to_thread(child_marked), timeout=30)  # reported: on disk
    server.kill9()
    (tmp_path / "started").unlink()
    server.start()
    await wait_until(lambda: (tmp_path / "started").exists(), timeout=60)
    (tmp_path / "release").touch()
    result = await asyncio.wait_for(
        asyncio.to_thread(ct.get_result, dispatch_id, True, server.addr), 60)
    assert result.status == "COMPLETED" and result.result == 6, result.error
    children = [d for d in _rows(server.data_dir) if d["parent_dispatch_id"] == dispatch_id]
    assert len(children) == 1  # the re-run sublattice node found its child
    assert len((tmp_path / "runs").read_text().splitlines()) == 1  # the child's mark ran once


def _rows(data_dir: Path) -> list[dict]:
    return rows(data_dir, "SELECT * FROM dispatches")


async def test_a_sublattice_node_waits_out_a_restart_of_the_dispatcher_on_a_cluster_that_stays(
        server: ServerProcess, tmp_path: Path) -> None:
    """On a cluster the dispatcher does not own (``--scheduler-address``), a sublattice node
    keeps running while the dispatcher is killed and started again: its wait for the child
    reconnects (as ``get_result(wait=True)`` does) instead of failing the node, and the
    dispatch completes with one child whose electrons ran once."""
    from tests.conftest import dask_processes
    from tests.faults.conftest import REPO

    with dask_processes(REPO, dict(server.env, PYTHONPATH=str(REPO)), [[], []]) as address:
        server.extra = ["--scheduler-address", address]
        server.start()
        dispatch_id = await asyncio.to_thread(
            ct.dispatch(_child_workflow(tmp_path), dispatcher_addr=server.addr), 5)
        await wait_until(lambda: (tmp_path / "started").exists(), timeout=30)  # inside the child
        server.kill9()  # the sublattice node's wait loses its connection now
        server.start()
        (tmp_path / "release").touch()
        result = await asyncio.wait_for(
            asyncio.to_thread(ct.get_result, dispatch_id, True, server.addr), 90)
        assert result.status == "COMPLETED" and result.result == 6, result.error
        children = [d for d in _rows(server.data_dir) if d["parent_dispatch_id"] == dispatch_id]
        assert len(children) == 1
        server.stop()


async def test_a_dispatch_failed_before_a_restart_says_so_as_it_would_have(
        server: ServerProcess, tmp_path: Path) -> None:
    # A node failed, the dispatcher was killed while another still ran: the dispatch's error
    # after the restart held the node's whole traceback instead of the one line it gives live.
    started, release = str(tmp_path / "started"), str(tmp_path / "release")

    @ct.lattice
    def wf(x):
        return fail(x), gate(x, started, release)

    server.start()
    dispatch_id = await asyncio.to_thread(ct.dispatch(wf, dispatcher_addr=server.addr), 3)
    await wait_until(lambda: (tmp_path / "started").exists(), timeout=30)
    await wait_until(lambda: _failed(server, dispatch_id, 0), timeout=30)
    server.kill9()
    (tmp_path / "started").unlink()
    server.start()
    await wait_until(lambda: (tmp_path / "started").exists(), timeout=30)
    (tmp_path / "release").touch()
    result = await asyncio.to_thread(ct.get_result, dispatch_id, True, server.addr)
    assert result.status == ct.status.FAILED
    assert result.error == "Node 0 (fail) failed: ValueError: bad value 3"
    assert "Traceback" in result.get_node_result(0)["error"]  # the node keeps the whole of it


async def _failed(server: ServerProcess, dispatch_id: str, node_id: int) -> bool:
    return await _node_status(server.addr, dispatch_id, node_id) == "FAILED"
