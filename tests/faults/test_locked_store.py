"""Another process holds the dispatcher's SQLite database locked (issue #11 item 5).

A write that cannot get the lock answers 503 with a retry hint, stores nothing and leaves the
server serving; the SDK retries as asked, so a short lock costs a user a wait, not an error.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
import urllib.request
import uuid

import pytest

import covalent as ct
from covalent._dispatch import build_submission
from tests.faults.conftest import ServerProcess
from tests.tasks import add

pytestmark = [pytest.mark.slow, pytest.mark.processes, pytest.mark.timeout(120)]


@ct.lattice
def _plus_one(x):
    return add(x, 1)


def _health_seconds(server: ServerProcess) -> float:
    t = time.perf_counter()
    req = urllib.request.Request(server.url + "/api/v1/health",
                                 headers={"Authorization": f"Bearer {server.token}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200
    return time.perf_counter() - t


async def test_a_locked_store_answers_503_and_the_sdk_waits_it_out(server: ServerProcess,
                                                                   store_kind: str) -> None:
    if store_kind != "sqlite":
        pytest.skip("a lock on the SQLite file; PostgreSQL's locks: tests/faults/test_postgres.py")
    server.start()
    locker = sqlite3.connect(server.data_dir / "dispatches.db", isolation_level=None, timeout=30,
                             check_same_thread=False)  # released from another thread below
    locker.execute("BEGIN EXCLUSIVE")  # what a user's own sqlite3 shell or backup tool can do
    try:
        dispatch_id = str(uuid.uuid4())
        body = build_submission(_plus_one, (1,), {}, dispatch_id=dispatch_id, disable_run=False)
        code, headers, answer = await asyncio.to_thread(server.post_dispatch, body)
        assert code == 503, answer
        assert headers.get("Retry-After") == "1" and b'"Unavailable"' in answer
        assert b"locked by another process" in answer
        assert await asyncio.to_thread(_health_seconds, server) < 1.0  # still serving
    finally:
        locker.execute("ROLLBACK")
    # Nothing of the refused submission was kept: the same id is created now, and runs.
    code, _, answer = await asyncio.to_thread(server.post_dispatch, body)
    assert code == 201, answer
    result = await asyncio.to_thread(ct.get_result, dispatch_id, True, server.addr)
    assert (result.status, result.result) == (ct.status.COMPLETED, 2)

    # The SDK rides out a lock held longer than the server waits for it (5 s): it retries the
    # 503s as they ask and the dispatch goes through once the lock is gone.
    locker.execute("BEGIN EXCLUSIVE")
    released = threading.Event()

    def release_later() -> None:
        released.wait(7.0)  # held past one busy timeout: at least one 503 is answered
        locker.execute("ROLLBACK")

    holder = threading.Thread(target=release_later)
    holder.start()
    try:
        t = time.monotonic()
        later = await asyncio.to_thread(ct.dispatch(_plus_one, dispatcher_addr=server.addr), 41)
        waited = time.monotonic() - t
    finally:
        released.set()
        await asyncio.to_thread(holder.join, 30)
        locker.close()
    assert waited > 5.0  # it did wait for the lock rather than fail or skip the store
    result = await asyncio.to_thread(ct.get_result, later, True, server.addr)
    assert (result.status, result.result) == (ct.status.COMPLETED, 42)
    assert "Traceback" not in server.log.read_text()
