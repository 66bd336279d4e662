"""Who owns a loopback socket on this machine (Linux's ``/proc/net/tcp``, ``tcp6``).

A loopback connection's two ends are both sockets of this machine, and the kernel lists each
with the user that owns it (an accepted socket belongs to the user of the listening one). The
server uses it to bind a browser session to the user whose browser opened it; the SDK uses it
to check that the process answering at the dispatcher's address is its user's own before it
sends the token or reads an answer (``covalent._client``). Elsewhere (another machine, no
``/proc``) nothing is listed and both fall back to what they can check.
"""

from __future__ import annotations

import socket
import struct
from typing import Any


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
    """The uid owning the socket at ``client_end`` connected to ``server_end`` on this
    machine, or None if the kernel lists no such socket (it is on another machine). (Either
    end can be asked about: the names say how the server asks about its client.)

    An IPv4 end may belong to an IPv6 socket that also takes IPv4 (a "dual-stack" listener on
    ``::``, whose accepted sockets the kernel lists in ``tcp6`` as ``::ffff:127.0.0.1``):
    both tables are read.
    """
    # (table, family, prefix) where the pair may be listed; an IPv4 pair also IPv4-mapped
    places = [(table or ("/proc/net/tcp6" if family == socket.AF_INET6 else "/proc/net/tcp"),
               family, "")]
    if table is None and family == socket.AF_INET:
        places.append(("/proc/net/tcp6", socket.AF_INET6, "::ffff:"))
    for path, fam, prefix in places:
        owner = _lookup(path, _hex_address(prefix + client_end[0], client_end[1], fam),
                        _hex_address(prefix + server_end[0], server_end[1], fam))
        if owner is not None:
            return owner
    return None


def _lookup(path: str, client: str, server: str) -> int | None:
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
