"""Nothing a client sends grows the server log without bound (issue #21).

A malformed request used to write a ~550-byte traceback per request into ``server.log``, which
was never rotated. Real processes: a ``python -m dispatcher`` hit with malformed requests by
a client without the token, and ``covalent start`` with a small ``COVALENT_LOG_MAX_BYTES``.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

import covalent as ct
from tests.conftest import free_port
from tests.faults.conftest import Cli, ServerProcess
from tests.tasks import add

pytestmark = [pytest.mark.slow, pytest.mark.processes]

MALFORMED = [b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n",
             b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX: \x00\x01\r\n\r\n",
             b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\n",
             b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
             b"Content-Length: 3\r\n\r\n"]


def _send(port: int, raw: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(raw)
        return s.recv(100)


def test_malformed_requests_log_one_line_per_cause(server: ServerProcess) -> None:
    server.start()
    before = server.log.stat().st_size
    answers = {_send(server.port, raw)[:12] for raw in MALFORMED * 150}
    assert answers == {b"HTTP/1.0 400"}
    assert server.status() is not None  # still serving
    grown = server.log.read_text(errors="replace")[before:]
    assert "Traceback" not in grown
    for cause in ("Invalid header token", "Invalid header value char",
                  "Invalid character in Content-Length", "Transfer-Encoding"):
        assert grown.count(cause) == 1, (cause, grown)
    assert len(grown) < 2000, grown


@ct.lattice
def _one(x):
    return add(x, 1)


def test_server_log_is_rotated(cli: Cli) -> None:
    cli.env["COVALENT_LOG_MAX_BYTES"] = "2000"
    out = cli("start", "--port", str(free_port()), "--workers", "1")
    assert out.returncode == 0, out.stdout + out.stderr
    cli.server_pid()
    addr = out.stdout.split(" at http://")[1].split()[0]
    for i in range(30):  # a few log lines each
        assert ct.get_result(ct.dispatch(_one, dispatcher_addr=addr)(i), wait=True,
                             dispatcher_addr=addr).result == i + 1
    for raw in MALFORMED:
        _send(int(addr.rsplit(":", 1)[1]), raw)
    log = cli.data_dir / "server.log"
    rotated = sorted(p.name for p in cli.data_dir.glob("server.log*"))
    assert rotated == ["server.log", "server.log.1", "server.log.2", "server.log.3"]
    assert log.stat().st_size < 6000  # past 2000 by the records since the last rotation
    last = cli("logs", "-n", "5")
    assert last.returncode == 0 and "Invalid header" in last.stdout  # the newest lines
