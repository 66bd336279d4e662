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
from typing import Any

from covalent._peers import socket_owner

Peer = tuple[str, str]  # ("uid", "1000") or ("addr", "192.0.2.7")


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
