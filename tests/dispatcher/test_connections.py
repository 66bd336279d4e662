"""Open connections are bounded: beyond the limit a new one gets 503 at once, logged once."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys

import pytest
from aiohttp import web

from dispatcher.connections import LimitedSite, OncePerKind, connection_limit
from tests.conftest import wait_until


async def _get(port: int, path: str = "/ping") -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_beyond_the_limit_new_connections_get_503_and_one_log_line(
        caplog: pytest.LogCaptureFixture) -> None:
    async def ping(request: web.Request) -> web.Response:
        return web.Response(text="pong")

    app = web.Application()
    app.router.add_get("/ping", ping)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.setblocking(False)
    port = sock.getsockname()[1]
    site = LimitedSite(runner, sock, limit=3)
    await site.start()
    idle: list[socket.socket] = []
    try:
        assert await _get(port) == (200, b"pong")
        for _ in range(3):  # slow clients: connected, sending nothing
            idle.append(socket.create_connection(("127.0.0.1", port)))
        server = runner.server
        assert server is not None
        await wait_until(lambda: len(server.connections) == 3)
        with caplog.at_level(logging.WARNING, logger="covalent.dispatcher"):
            answers = [await _get(port) for _ in range(20)]
        assert {status for status, _ in answers} == {503}
        assert b'"error": "Unavailable"' in answers[0][1]
        assert site.refused == 20
        lines = [r for r in caplog.records if "connection limit of 3" in r.getMessage()]
        assert len(lines) == 1 and lines[0].exc_info is None

        idle.pop().close()  # one slow client goes: a new one is served again
        await wait_until(lambda: len(server.connections) < 3)
        assert await _get(port) == (200, b"pong")
    finally:
        for s in idle:
            s.close()
        await runner.cleanup()


def test_an_exhausted_accept_is_one_line_a_minute_not_a_traceback_each() -> None:
    logger = logging.getLogger("test-once-per-kind")
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger.addHandler(Keep())
    logger.addFilter(OncePerKind())
    logger.propagate = False
    for _ in range(100):
        try:
            raise OSError(24, "Too many open files")
        except OSError:
            logger.error("socket.accept() out of system resource", exc_info=sys.exc_info())
    logger.error("something else")
    assert [r.getMessage() for r in records] == [
        "socket.accept() out of system resource: [Errno 24] Too many open files", "something else"]
    assert records[0].exc_info is None


def test_the_limit_leaves_descriptors_for_the_server_itself() -> None:
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert connection_limit(None) == min(1000, soft - 256)
    assert connection_limit(10) == 10
    assert connection_limit(10**9) <= soft - 256
