"""Tell who is at the other end of a connection: the local user, or the remote address.

On Linux a loopback connection's two ends are both sockets of this machine, and the kernel
lists each with the user that owns it (``/proc/net/tcp``, ``tcp6``): the client's socket is
the entry whose local address is the server's peer and whose remote address is the server's
own end. A browser session is bound to that identity when it is made (``sessions``), so the
session's cookie, which browsers also send to every other port of 127.0.0.1, authenticates
nobody but the user whose browser it was made for (issue #21). Elsewhere (another machine, or
no ``/proc``) the identity is the peer's address.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

Peer = tuple[str, str]  # ("uid", "1000") or ("addr", "192.0.2.7")


def _hex_address(host: str, port: int, family: int) -> str:
    """An address as ``/proc/net/tcp*`` prints it (words in host byte order).

    >>> _hex_address("127.0.0.1", 48008, socket.AF_INET) in ("0100007F:BB88", "7F000001:BB88")
    True
    """
    packed = socket.inet_pton(family, host)
    words = struct.unpack(f"={len(packed) // 4}I", packed)
    return "".join(f"{w:08X}" for w in words) + f":{port:04X}"


def socket_owner(server_end: tuple[Any, ...], client_end: tuple[Any, ...], family: int,
                 table: str | None = None) -> int | None:
    """The uid owning the client socket at ``client_end`` connected to ``server_end`` on this
    machine, or None if the kernel lists no such socket (it is on another machine)."""
    path = table or ("/proc/net/tcp6" if family == socket.AF_INET6 else "/proc/net/tcp")
    client = _hex_address(client_end[0], client_end[1], family)
    server = _hex_address(server_end[0], server_end[1], family)
    try:
        with open(path) as fh:
            next(fh, None)  # the header line
            for line in fh:
                fields = line.split()
                if len(fields) > 7 and fields[1] == client and fields[2] == server:
                    return int(fields[7])
    except OSError:
        return None
    return None


def peer_of(transport: Any) -> Peer | None:
    """Who holds the other end of ``transport`` (an asyncio socket transport), or None."""
    if transport is None:
        return None
    sock = transport.get_extra_info("socket")
    peer, own = transport.get_extra_info("peername"), transport.get_extra_info("sockname")
    if sock is None or not peer or not own:
        return None
    family = sock.family
    if family in (socket.AF_INET, socket.AF_INET6):
        uid = socket_owner(own, peer, family)
        if uid is not None:
            return ("uid", str(uid))
        return ("addr", str(peer[0]))
    return None
