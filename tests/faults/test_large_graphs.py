"""Large dispatches: the server keeps answering while it stores and compiles them, and a kill -9
with 100,000 nodes RUNNING restarts within seconds (issues #10 item 5, #11 item 4, #13 item 2);
on PostgreSQL, to keep CI's time, 30,000.

The nodes wait behind one gate that never opens: what is measured is storing, compiling,
submitting, resuming and cancelling a graph that size, not running its tasks.

At 10,000 nodes no answer takes a second. At 100,000 the worst answers measured 0.6 to 0.7 s on
this 2-core machine when quiet (they were 0.9 to 2.7 s before the header was parsed a member at a
time, the GIL switch interval shortened and the cancelled futures released in slices), and up to
7 s with five other test suites running beside it. The bounds asserted here are not timings (the
benchmarks measure those): they leave room for a loaded machine and catch only a stall, such as
the 60 s ones they replaced.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

import covalent as ct
from covalent import wire
from covalent._dispatch import build_submission
from tests.conftest import wait_until
from tests.faults.conftest import ServerProcess
from tests.tasks import add, gate

pytestmark = [pytest.mark.slow, pytest.mark.processes, pytest.mark.timeout(420),
              pytest.mark.all_stores]

NODES = {"sqlite": 100_000, "postgres": 30_000}  # PostgreSQL: the same paths, 3x faster
# (its 100,000-node run took 97 s of CI; more than 20,000 nodes still go to Dask in chunks)
WORST_AT_100K = 15.0  # seconds; a stall, not a timing: measured 0.6-7 s (the module docstring)


@ct.lattice
def _fan_out_behind_a_gate(n, started, release):
    first = gate(0, started, release, 600.0)
    return [add(first, i) for i in range(n)]


def _request(server: ServerProcess, method: str, path: str, body: bytes | None = None,
             content_type: str = "application/json", timeout: float = 60) -> tuple[int, bytes]:
    req = urllib.request.Request(server.url + "/api/v1" + path, data=body, method=method,
                                 headers={"Authorization": f"Bearer {server.token}",
                                          "Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def stalls(server: ServerProcess) -> list[str]:
    """What the server's LoopWatch logged: where its event loop was held, and how long."""
    entries = re.split(r"\n(?=\d{4}-\d\d-\d\d )", server.log.read_text())
    return [e for e in entries if "event loop blocked" in e or "event loop answered" in e]


class HealthPoller:
    """``GET /health`` every 50 ms from a thread; each answer's latency (inf: no answer)."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll)

    def _poll(self) -> None:
        while not self._stop.is_set():
            t = time.perf_counter()
            try:
                code, _ = _request(self.server, "GET", "/health", timeout=30)
            except OSError:
                code = 0
            self.latencies.append(time.perf_counter() - t if code == 200 else float("inf"))
            self._stop.wait(0.05)

    def __enter__(self) -> HealthPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)


async def _submit_behind_a_gate(server: ServerProcess, tmp_path: Path, nodes: int
                                ) -> tuple[str, list[float]]:
    """Submit a fan-out of ``nodes`` held by a gate; return its id once Dask has it, and
    every ``/health`` latency seen meanwhile."""
    started, release = tmp_path / "started", tmp_path / "release"
    dispatch_id = str(uuid.uuid4())
    body = await asyncio.to_thread(build_submission, _fan_out_behind_a_gate,
                                   (nodes, str(started), str(release)), {},
                                   dispatch_id=dispatch_id, disable_run=False)
    with HealthPoller(server) as poller:
        code, answer = await asyncio.to_thread(_request, server, "POST", "/dispatches", body,
                                               wire.CONTENT_TYPE, 600)
        assert code == 201, answer
        await wait_until(started.exists, timeout=120, interval=0.1)  # submitted to Dask
    return dispatch_id, poller.latencies


async def test_a_10k_node_dispatch_is_stored_and_compiled_with_every_answer_within_a_second(
        server: ServerProcess, tmp_path: Path) -> None:
    server.start()
    dispatch_id, latencies = await _submit_behind_a_gate(server, tmp_path, 10_000)
    assert len(latencies) > 5
    assert max(latencies) < 5.0, (sorted(latencies)[-5:], stalls(server))  # < 1 s when quiet
    (tmp_path / "release").touch()
    result = await asyncio.to_thread(ct.get_result, dispatch_id, True, server.addr)
    assert result.status == ct.status.COMPLETED and result.result[-1] == 1 + 9_999


async def test_a_huge_dispatch_never_stalls_the_server_and_restarts_within_seconds(
        server: ServerProcess, tmp_path: Path, store_kind: str) -> None:
    nodes = NODES[store_kind]
    server.start()
    started = tmp_path / "started"
    dispatch_id, latencies = await _submit_behind_a_gate(server, tmp_path, nodes)
    assert len(latencies) > 20
    assert max(latencies) < WORST_AT_100K, (sorted(latencies)[-5:], stalls(server))

    server.kill9()  # with 100,000 nodes RUNNING on disk
    started.unlink()
    t = time.monotonic()
    server.start(timeout=60)  # returns once /status answers with both workers up
    assert time.monotonic() - t < 60  # the port is bound before the backlog is resumed
    # (10-24 s measured here, on a shared machine; a restart that waited for the resume of
    # 100,000 nodes would take minutes)
    with HealthPoller(server) as poller:  # resuming: compiled and submitted again
        await wait_until(started.exists, timeout=180, interval=0.1)
        code, answer = await asyncio.to_thread(_request, server, "POST",
                                               f"/dispatches/{dispatch_id}/cancel", b"{}")
        assert code == 200, answer
        await wait_until(lambda: json.loads(_request(
            server, "GET", f"/dispatches/{dispatch_id}/status")[1])["status"] == "CANCELLED",
            timeout=120, interval=0.5)
    assert max(poller.latencies) < WORST_AT_100K, (sorted(poller.latencies)[-5:], stalls(server))
    progress = json.loads(_request(server, "GET", f"/dispatches/{dispatch_id}/progress")[1])
    [adds] = [e for e in progress["electrons"] if e["name"] == "add"]
    counts = {k: adds[k] for k in ("total", "completed", "running", "failed", "cancelled")}
    assert counts == {"total": nodes, "completed": 0, "running": 0, "failed": 0,
                      "cancelled": nodes}, server.log.read_text()[-4000:]
