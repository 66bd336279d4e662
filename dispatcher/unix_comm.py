"""Dask comms over Unix sockets: how the embedded process cluster talks (``unix://``).

The embedded cluster (its scheduler, nannies, workers and the dispatcher's client) must stay
closed to the machine's other users: its scheduler runs whatever code it is sent. TLS with
credentials made fresh at each start did that, and cost ours 10-25 % on the rows that move data
(benchmarks/README.md, "The embedded cluster over Unix sockets"). A Unix socket in a directory
only its user may enter (0700, made by ``socket_dir``) keeps the others out through the file
system, without encrypting what never leaves the machine.

An address is ``unix://<path of the socket>``. A listener is given a directory (as Dask builds
it from a host and a port: ``<dir>:0``) and binds a new socket in it, or the path of a socket.
Connections are ``distributed.comm.tcp.TCP`` comms over a Tornado stream of the Unix socket; the
socket ignores TCP's own options (keep-alive probes, user timeout), which Dask sets on every
stream and a Unix socket refuses. The backend is registered as this module is imported: by the
dispatcher, its scheduler process, and each embedded worker process (a Dask preload, imported
before the worker listens); and as the ``distributed.comm.backends`` entry point ``unix``
(pyproject.toml), which Dask looks up in any other process, a user's own ``distributed.Client``.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import dask
from distributed.comm.core import BaseListener, Comm, CommClosedError, Connector
from distributed.comm.registry import Backend, backends
from distributed.comm.tcp import MAX_BUFFER_SIZE, TCP, convert_stream_closed_error
from tornado import netutil
from tornado.iostream import IOStream, StreamClosedError

PREFIX = "unix://"
HOST = "127.0.0.1"  # the host Dask groups these workers under: this machine
SUN_PATH_MAX = 107  # bytes in sockaddr_un.sun_path, less its terminating NUL (Linux)
STALE_S = 600.0  # a socket directory without a listener for this long was left by a dead cluster


class _UnixSocket(socket.socket):
    """A Unix socket that takes TCP's options (Dask sets them on every stream) as no-ops."""

    def setsockopt(self, level: int, option: int, value: Any, *args: Any) -> None:
        if level == socket.IPPROTO_TCP:
            return
        super().setsockopt(level, option, value, *args)


def _own(sock: socket.socket) -> _UnixSocket:
    return _UnixSocket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=sock.detach())


def socket_dir(near: Path) -> Path:
    """A new directory for the embedded cluster's sockets, that no other user may enter (0700):
    in ``near`` (the data directory's ``run``), or in the system's temporary directory when a
    socket's path there would not fit in the 107 bytes a Unix socket's path may take. A
    directory made there is named by a link of the same name in ``near``, so that the sweep of
    the next start finds it if this dispatcher is killed before it removes it."""
    near.mkdir(mode=0o700, parents=True, exist_ok=True)
    sweep(near)
    longest = len(os.fsencode(near)) + len("/sockets-12345678/4194304-0123abcd.sock")
    if longest <= SUN_PATH_MAX:
        path = Path(tempfile.mkdtemp(prefix="sockets-", dir=near))
    else:
        path = Path(tempfile.mkdtemp(prefix="sockets-"))
        (near / path.name).symlink_to(path)
    os.chmod(path, 0o700)  # mkdtemp's own mode; said again so it does not rest on that
    return path


def sweep(near: Path, stale_s: float = STALE_S) -> None:
    """Remove the socket directories a dispatcher killed before it could left in ``near`` (or
    named there by a link): those where no socket has a listener any more (and none came for
    ``stale_s``: a cluster that is starting has none yet)."""
    for old in near.glob("sockets-*"):
        try:
            where = _linked(old) if old.is_symlink() else old
            if where is None:  # its directory is gone, or is not one this user made
                old.unlink()
                continue
            quiet = time.time() - where.stat().st_mtime >= stale_s
        except OSError:
            continue
        if quiet and not any(_listened(sock) for sock in where.glob("*.sock")):
            remove_socket_dir(where, near)


def _linked(link: Path) -> Path | None:
    """The socket directory ``link`` names, if it is still a directory of this user's."""
    where = Path(os.readlink(link))
    try:
        st = where.lstat()
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        return None
    return where


def _listened(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except OSError:  # busy (a full backlog) or anything else: leave it be
            return True
        return True


def remove_socket_dir(path: Path, near: Path | None = None) -> None:
    """Remove the socket directory ``path`` and, given the ``near`` it was made for, the link
    there that names it."""
    shutil.rmtree(path, ignore_errors=True)
    if near is not None and path.parent != near:
        link = near / path.name
        try:
            if link.is_symlink() and Path(os.readlink(link)) == path:
                link.unlink()
        except OSError:
            pass


def _socket_path(loc: str) -> Path:
    """The socket a listener given ``loc`` binds: a new one in a directory, else ``loc``."""
    bare = re.sub(r":\d+$", "", loc)  # Dask appends the port it was given
    if not bare.startswith("/"):
        raise ValueError(f"a unix:// address is the path of a directory or a socket, not {loc!r}")
    path = Path(bare)
    if path.is_dir():
        path = path / f"{os.getpid()}-{secrets.token_hex(4)}.sock"
    if len(os.fsencode(path)) > SUN_PATH_MAX:
        raise ValueError(f"the socket path {str(path)!r} is longer than a Unix socket allows "
                         f"({SUN_PATH_MAX} bytes)")
    return path


class UnixConnector(Connector):
    async def connect(self, address: str, deserialize: bool = True,
                      **connection_args: Any) -> Comm:
        sock = _UnixSocket(socket.AF_UNIX, socket.SOCK_STREAM)
        stream = IOStream(sock, max_buffer_size=MAX_BUFFER_SIZE)
        try:
            await stream.connect(address)
        except StreamClosedError as exc:  # no such socket, refused, not ours to enter
            convert_stream_closed_error(self, exc)  # type: ignore[no-untyped-call]
        return TCP(stream, PREFIX + address, PREFIX + address, deserialize)


class UnixListener(BaseListener):
    prefix = PREFIX  # a worker logs its listening address with it

    def __init__(self, loc: str, comm_handler: Callable[[Comm], Awaitable[None]],
                 deserialize: bool = True, allow_offload: bool = True,
                 **connection_args: Any) -> None:
        super().__init__()
        self.path = _socket_path(loc)
        self.comm_handler = comm_handler
        self.deserialize = deserialize
        self.allow_offload = allow_offload
        self._sock: socket.socket | None = None
        self._stop_accepting: Callable[[], None] | None = None
        self._serving: set[asyncio.Task[None]] = set()  # held here: the loop holds tasks weakly

    async def start(self) -> None:
        backlog = int(dask.config.get("distributed.comm.socket-backlog"))
        self._sock = netutil.bind_unix_socket(str(self.path), mode=0o600, backlog=backlog)
        self._stop_accepting = netutil.add_accept_handler(self._sock, self._accepted)

    def _accepted(self, conn: socket.socket, _address: Any) -> None:
        stream = IOStream(_own(conn), max_buffer_size=MAX_BUFFER_SIZE)
        task = asyncio.ensure_future(self._handle(stream))
        self._serving.add(task)
        task.add_done_callback(self._serving.discard)

    async def _handle(self, stream: IOStream) -> None:
        if self._sock is None:  # stopped after the connection was accepted: nobody will
            stream.close()     # answer its handshake, so do not leave it waiting
            return
        # A Unix socket's peer has no name: both ends are known by the socket they share.
        comm = TCP(stream, self.contact_address, self.contact_address, self.deserialize)
        comm.allow_offload = self.allow_offload
        try:
            await self.on_connection(comm)
        except CommClosedError:  # closed before its handshake ended: nothing to serve
            return
        await self.comm_handler(comm)

    def stop(self) -> None:
        if self._stop_accepting is not None:
            self._stop_accepting()
            self._stop_accepting = None
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
            self.path.unlink(missing_ok=True)

    @property
    def listen_address(self) -> str:
        return PREFIX + str(self.path)

    @property
    def contact_address(self) -> str:
        return PREFIX + str(self.path)


class UnixBackend(Backend):
    def get_connector(self) -> Connector:
        return UnixConnector()

    def get_listener(self, loc: str, handle_comm: Callable[[Comm], Awaitable[None]],
                     deserialize: bool, **connection_args: Any) -> UnixListener:
        return UnixListener(loc, handle_comm, deserialize, **connection_args)

    def get_address_host(self, loc: str) -> str:
        return HOST

    def resolve_address(self, loc: str) -> str:
        return loc

    def get_local_address_for(self, loc: str) -> str:
        return str(Path(loc).parent)  # a listener there binds a new socket beside it


backends.setdefault("unix", UnixBackend())
