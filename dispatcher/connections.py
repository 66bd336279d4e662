"""A bound on open connections, a share of them for clients that authenticate, and one log
line per kind of refusal (issues #11, #21).

Beyond ``limit`` open connections, a new one is answered at once with ``503`` (JSON body,
``Retry-After``) and closed, before anything of it is read: a crowd of slow or idle clients
cannot take every file descriptor. Nor can it lock the owner out (``Gate``): a connection
that has not yet sent a request that passed the token guard is *pending*; a pending one is
closed after ``PREAUTH_S`` seconds, and at most three quarters of ``limit`` may be pending at
once (a new connection closes the oldest pending one), so another local user holding a
thousand idle connections never fills the server: the owner's connections, which send their
request at once, get in and stay. Each kind of refusal is logged once, then at most once a
minute with how many there were, never a traceback per connection; the same holds for
asyncio's own "accept() out of system resource" errors if descriptors run out anyway.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from typing import Any

from aiohttp import web

from .logfile import Tally

log = logging.getLogger("covalent.dispatcher")

DEFAULT_LIMIT = 1000
RESERVED_FDS = 256  # descriptors kept for the store, the cluster, logs and blob files
PREAUTH_S = 10.0  # how long a connection may stay open without an authenticated request

_BODY = json.dumps({"error": "Unavailable", "message": "the dispatcher has too many open "
                    "connections; retry in a moment"}).encode()
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        b"Retry-After: 1\r\nConnection: close\r\nContent-Length: " + str(len(_BODY)).encode()
        + b"\r\n\r\n" + _BODY)


def raise_fd_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def connection_limit(requested: int | None) -> int:
    """``requested`` (default 1000), never so high that connections could exhaust the
    descriptors the process may open."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    ceiling = max(16, soft - RESERVED_FDS) if soft != resource.RLIM_INFINITY else 1 << 20
    return min(requested or DEFAULT_LIMIT, ceiling)


class Gate:
    """Connections that have not authenticated yet (``pending``): each is closed after
    ``timeout`` seconds unless a request of it passes the token guard (``passed``), and at
    most ``cap`` are pending at once (one more closes the oldest)."""

    def __init__(self, timeout: float = PREAUTH_S) -> None:
        self.timeout = timeout
        self.cap = DEFAULT_LIMIT - DEFAULT_LIMIT // 4
        self.closed = 0
        self._pending: dict[Any, asyncio.TimerHandle] = {}  # protocol -> its timer, oldest first
        self._tally = Tally()

    def set_limit(self, limit: int) -> None:
        """Keep a quarter of ``limit`` open connections for clients that authenticate."""
        self.cap = max(1, limit - limit // 4)

    def connected(self, handler: Any) -> None:
        """A new connection (its protocol ``handler``) is pending."""
        self._pending[handler] = asyncio.get_running_loop().call_later(
            self.timeout, self._drop, handler, "idle")
        while len(self._pending) > self.cap and self.close_oldest():
            pass

    def passed(self, handler: Any) -> None:
        """A request of ``handler``'s connection passed the token guard: it stays."""
        timer = self._pending.pop(handler, None)
        if timer is not None:
            timer.cancel()

    gone = passed  # the connection closed: nothing to watch

    def close_oldest(self) -> bool:
        """Close the oldest pending connection; False if there is none."""
        if not self._pending:
            return False
        self._drop(next(iter(self._pending)), "crowded")
        return True

    def _drop(self, handler: Any, why: str) -> None:
        self.passed(handler)
        transport = handler.transport
        if transport is None or transport.is_closing():
            return
        transport.close()
        self.closed += 1
        now, quiet = self._tally.should_log("pending")
        if now:
            log.warning("closed a connection that sent no authenticated request (%s); at most "
                        "%d such connections stay open, each for %.0f s%s", _WHY[why], self.cap,
                        self.timeout, f" ({quiet} more closed since the last message)" if quiet else "")


class _Watched(asyncio.Protocol):
    """A connection's aiohttp protocol, with the gate told when it connects and closes."""

    __slots__ = ("handler", "gate")

    def __init__(self, handler: Any, gate: Gate) -> None:
        self.handler, self.gate = handler, gate

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.handler.connection_made(transport)
        self.gate.connected(self.handler)

    def connection_lost(self, exc: Exception | None) -> None:
        self.gate.gone(self.handler)
        self.handler.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.handler.data_received(data)

    def eof_received(self) -> bool | None:
        result: bool | None = self.handler.eof_received()
        return result

    def pause_writing(self) -> None:
        self.handler.pause_writing()

    def resume_writing(self) -> None:
        self.handler.resume_writing()


_WHY = {"idle": "none within the time allowed", "crowded": "the oldest pending, to make room"}
GATE = web.AppKey("connection_gate", Gate)


class _Refuse(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(BUSY)
        transport.close()


class LimitedSite(web.SockSite):
    """``web.SockSite`` that admits at most ``limit`` open connections (the only place that
    relies on aiohttp's site internals; ``tests/dispatcher/test_connections.py`` checks them)."""

    def __init__(self, runner: web.BaseRunner, sock: Any, *, limit: int, gate: Gate | None = None,
                 **kwargs: Any) -> None:
        super().__init__(runner, sock, **kwargs)
        self.limit = limit
        self.gate = gate
        if gate is not None:
            gate.set_limit(limit)
        self.refused = 0
        self._closed = 0  # pending connections closed in this turn to make room
        self._tally = Tally()
        # Connections accepted in this turn of the loop: asyncio accepts a batch, then calls
        # each one's connection_made (which lists it in server.connections) on the next turn.
        self._accepted = 0
        self._turn_pending = False

    def _protocol(self) -> asyncio.BaseProtocol:
        server = self._runner.server
        assert server is not None
        if not self._turn_pending:
            self._turn_pending = True
            asyncio.get_running_loop().call_soon(self._turn_over)
        open_now = len(server.connections) + self._accepted - self._closed
        if open_now >= self.limit and self.gate is not None and self.gate.close_oldest():
            self._closed += 1  # a pending connection makes room: this one may be the owner's
            open_now -= 1
        if open_now < self.limit:
            self._accepted += 1
            return server() if self.gate is None else _Watched(server(), self.gate)
        self.refused += 1
        now, quiet = self._tally.should_log("limit")
        if now:
            log.warning("connection limit of %d reached: new connections are answered 503 "
                        "until some close%s", self.limit,
                        f" ({quiet} refused since the last message)" if quiet else "")
        return _Refuse()

    def _turn_over(self) -> None:
        # Runs before the batch's connection_made calls, and no accept() happens in between.
        self._accepted, self._turn_pending, self._closed = 0, False, 0

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, sock=self._sock,
                                                backlog=self._backlog)


class OncePerKind(logging.Filter):
    """For asyncio's logger: a failing ``accept()`` (descriptors exhausted) is logged once
    per minute as one line with a count, not as a traceback per attempt."""

    def __init__(self) -> None:
        super().__init__()
        self._tally = Tally()

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if "accept" not in message:
            return True
        now, quiet = self._tally.should_log(message)
        if not now:
            return False
        detail = f": {record.exc_info[1]}" if record.exc_info and record.exc_info[1] else ""
        record.msg = f"{message}{detail}" + (f" ({quiet} more since the last message)" if quiet else "")
        record.args = ()
        record.exc_info = record.exc_text = None
        return True


def open_connections(request: web.Request) -> int:
    """Open HTTP connections of the server that answers ``request`` (for /metrics: aiohttp's
    ``Server`` lists them; ``tests/dispatcher/test_metrics.py`` checks the attribute)."""
    server = getattr(request.protocol, "_manager", None)
    return len(server.connections) if server is not None else 0
