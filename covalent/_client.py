"""Talk to the dispatcher over HTTP, blocking, one keep-alive connection per thread and address.

Uses the stdlib's ``http.client`` so the SDK works inside a running event loop (Jupyter) and
stays light to import. Every failure becomes a ``covalent.errors`` exception.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

from ._peers import socket_owner
from .config import ClientConfig
from .errors import (DispatcherError, DispatcherUnavailableError, IncompleteAnswerError,
                     ServerNotYoursError, error_from_body)
from .wire import API, CONTENT_TYPE

_local = threading.local()
_TIMEOUT = 60.0
BUSY_RETRY_FOR = 30.0  # how long a 503 with Retry-After (store locked, connections full) is retried


class _Pool(dict[str, http.client.HTTPConnection]):
    """This thread's keep-alive connections; closed when the thread ends (its locals go)."""

    def __del__(self) -> None:
        for conn in self.values():
            conn.close()


def _pool() -> _Pool:
    """The calling thread's connections."""
    pool: _Pool | None = getattr(_local, "pool", None)
    if pool is None:
        pool = _local.pool = _Pool()
    return pool


class _Connection(http.client.HTTPConnection):
    """An HTTP connection that, on this machine, talks only to its user's own processes."""

    def connect(self) -> None:
        super().connect()
        try:
            _check_owner(self.sock, f"{self.host}:{self.port}")
        except BaseException:
            self.close()
            raise


def _check_owner(sock: socket.socket, address: str) -> None:
    """ServerNotYoursError if the process at the other end of ``sock`` runs on this machine
    as another user (not the one ``COVALENT_SERVER_USER`` names). While your dispatcher is
    stopped, anyone on a shared machine may listen at its port: they would be sent your token
    and your workflow, and what they answer would be unpickled here (code run as you)."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    mine, theirs = sock.getsockname(), sock.getpeername()
    owner = socket_owner(mine, theirs, sock.family)  # the listening end's accepted socket
    allowed = os.environ.get("COVALENT_SERVER_USER", "").strip()
    if owner is None and _loopback(theirs[0]) and allowed != "*" \
            and socket_owner(theirs, mine, sock.family) is not None:
        # The kernel lists this end of the connection but not the other, on this machine:
        # whose it is cannot be told, so nothing is sent. (Where it lists neither, as on WSL 1
        # or without /proc, there is nothing to tell by: as on another machine.)
        raise ServerNotYoursError(address, "unknown",
                                  "is on this machine but the kernel does not say whose it "
                                  "is, so it may not be yours (COVALENT_SERVER_USER='*' "
                                  "talks to it all the same)")
    if owner is None or owner == os.geteuid():  # on another machine, or yours
        return
    name = _user_name(owner)
    if allowed and allowed in (name, str(owner), "*"):
        return
    raise ServerNotYoursError(address, name)


def _loopback(host: str) -> bool:
    """``127.0.0.1``, ``::1`` and ``::ffff:127.0.0.1`` (Python 3.11 calls the last not)."""
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return (mapped or ip).is_loopback


def _user_name(uid: int) -> str:
    import pwd  # (POSIX; only asked on a machine that lists its sockets' owners)

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _connection(url: str, fresh: bool = False) -> http.client.HTTPConnection:
    pool = _pool()
    conn = pool.get(url)
    if conn is None or fresh:
        if conn is not None:
            conn.close()
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"dispatcher address must be http://host:port, got {url!r}")
        conn = _Connection(parts.hostname, parts.port or 80, timeout=_TIMEOUT)
        pool[url] = conn
    return conn


def waker(url: str) -> Callable[[], None]:
    """For the calling thread: a function that, called from any thread, ends the request this
    thread is sending to ``url`` or waiting on an answer from (its socket is shut down, so the
    request raises at once rather than wait out a long-poll)."""
    pool = _pool()

    def wake() -> None:
        conn = pool.get(url)
        sock = conn.sock if conn is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # closed meanwhile: nothing waits on it

    return wake


def request(
    cfg: ClientConfig,
    method: str,
    path: str,
    *,
    query: dict[str, Any] | None = None,
    body: bytes | list[bytes] | None = None,
    content_type: str = "application/json",
    timeout: float = _TIMEOUT,
) -> tuple[int, str, bytes]:
    """Send one request; return (status, content type, body) of a 2xx answer. A body given
    as a list of parts is sent part after part, never joined (large values are not copied). A
    503 that asks to retry (store locked by another process, too many open connections) is
    retried as it asks, for up to ``BUSY_RETRY_FOR`` seconds; the server wrote nothing for it.

    Raises:
        DispatcherUnavailableError: nothing answers at ``cfg.url``.
        DispatcherError (a subclass per error code): the server answered 4xx/5xx.
    """
    target = API + path + (("?" + urlencode(query, doseq=True)) if query else "")
    headers = {"Content-Type": content_type, "Accept": "application/json"}
    if cfg.token:
        headers["Authorization"] = f"Bearer {cfg.token}"
    if isinstance(body, list):
        headers["Content-Length"] = str(sum(len(part) for part in body))
    give_up = time.monotonic() + BUSY_RETRY_FOR
    while True:
        resp, data = _send(cfg, method, target, body, headers, timeout)
        wait = _retry_after(resp) if resp.status == 503 else None
        if wait is None or time.monotonic() + wait > give_up:
            break
        time.sleep(wait)  # the server asked for it: its store is locked or it is full
    ctype = resp.getheader("Content-Type", "")
    if resp.status >= 400:
        raise _error(resp.status, data)
    return resp.status, ctype, data


def _retry_after(resp: http.client.HTTPResponse) -> float | None:
    """Seconds a 503 asks to wait (1 to 10), or None if it does not ask."""
    try:
        return min(max(float(resp.getheader("Retry-After", "")), 1.0), 10.0)
    except ValueError:
        return None


def _send(cfg: ClientConfig, method: str, target: str, body: bytes | list[bytes] | None,
          headers: dict[str, str], timeout: float) -> tuple[http.client.HTTPResponse, bytes]:
    for attempt in (0, 1):
        conn = _connection(cfg.url, fresh=attempt > 0)
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        try:
            conn.request(method, target, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            break
        except ServerNotYoursError:  # (an OSError too): nothing was sent, say why
            conn.close()
            raise
        except http.client.IncompleteRead as exc:  # the server closed it mid-answer: say so now
            conn.close()
            short = f", {exc.expected} bytes short" if exc.expected else ""
            raise IncompleteAnswerError(
                "IncompleteAnswer", f"the answer to {method} {target.split('?')[0]} was cut off "
                f"after {len(exc.partial)} bytes{short}; the dispatcher's log (`covalent logs`) "
                "says why", 200) from None
        except (http.client.RemoteDisconnected, http.client.ImproperConnectionState,
                BrokenPipeError, ConnectionResetError) as exc:
            conn.close()
            if attempt:  # a kept-alive connection the server closed, or one left mid-request:
                raise DispatcherUnavailableError(cfg.url, str(exc)) from exc  # retried once
        except (ConnectionRefusedError, socket.gaierror, socket.timeout, OSError) as exc:
            conn.close()
            raise DispatcherUnavailableError(cfg.url, f"{type(exc).__name__}: {exc}") from exc
        except BaseException:  # interrupted between request and answer (a cancel, Ctrl-C):
            conn.close()  # this thread's next request must not find it half-used
            raise
    return resp, data


def request_json(cfg: ClientConfig, method: str, path: str, **kw: Any) -> Any:
    _, _, data = request(cfg, method, path, **kw)
    return json.loads(data) if data else None


def _error(status: int, data: bytes) -> DispatcherError:
    try:
        body = json.loads(data)
        return error_from_body(str(body["error"]), str(body["message"]), status)
    except (ValueError, KeyError, TypeError):
        return DispatcherError("HTTPError", f"HTTP {status}: {data[:200]!r}", status)


__all__ = ["request", "request_json", "CONTENT_TYPE"]
