"""A crowd of idle connections cannot lock people out of a dispatcher process, or flood its log."""

from __future__ import annotations

import asyncio
import socket

import pytest

import covalent as ct
from tests.conftest import wait_until
from tests.faults.conftest import ServerProcess
from tests.tasks import two_node

pytestmark = [pytest.mark.slow, pytest.mark.processes, pytest.mark.timeout(120)]


def _status_code(server: ServerProcess) -> int:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(server.url + "/api/v1/status",
                                 headers={"Authorization": f"Bearer {server.token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_idle_connections_beyond_the_limit_get_503_and_one_log_line(
        server: ServerProcess) -> None:
    server.env["COVALENT_MAX_CONNECTIONS"] = "20"
    server.start()
    idle = []
    try:
        for _ in range(300):  # slow clients: connect, send nothing, stay
            idle.append(socket.create_connection(("127.0.0.1", server.port), timeout=10))
        # The server admitted 20 and answered the others 503 at once, closing them.
        refused = 0
        for s in idle:
            s.settimeout(0.5)
            try:
                refused += s.recv(4096).startswith(b"HTTP/1.1 503")
            except TimeoutError:
                pass  # admitted: waiting for a request that never comes
        assert refused == 280
        assert await asyncio.to_thread(_status_code, server) == 503  # a new client: told to retry
    finally:
        for s in idle:
            s.close()
    # The crowd gone, everything works again; the log holds one line about all of it.
    await wait_until(lambda: asyncio.to_thread(lambda: _status_code(server) == 200), timeout=30)
    dispatch_id = await asyncio.to_thread(ct.dispatch(two_node, dispatcher_addr=server.addr), 2, 3)
    result = await asyncio.to_thread(ct.get_result, dispatch_id, True, server.addr)
    assert result.result == 10
    log = server.log.read_text()
    assert log.count("connection limit of 20 reached") == 1
    assert "Traceback" not in log
