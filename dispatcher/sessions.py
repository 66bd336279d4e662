"""Browser sessions of the web UI: short-lived secrets bound to the user who opened them.

A browser cannot send the API token on a navigation, so the link ``covalent start`` prints
(``/?ticket=...``, or one made by hand with the token, ``/?token=...``) is traded for a *session*: a fresh random secret in an HttpOnly,
SameSite=Strict cookie, never the token itself (issue #21). Browsers send a 127.0.0.1 cookie
to every port of 127.0.0.1 (cookies are not port-scoped, and other ports are the same site),
so another local user's web server on another port can receive it. What it receives is
useless there:

- the server keeps the table of sessions (a hash of each secret), in memory: a session ends
  after ``SESSION_TTL`` or when the server stops, and a secret the server did not issue
  (another server's, one set by a page on another port) opens nothing;
- a session carries the user whose token opened it (issue #26), and acts as that user while
  the user is not revoked;
- a session is bound to whoever opened it (``peers``: on loopback the user owning the
  browser's socket, else the browser's address): the same cookie sent from another user's
  process is refused;
- the printed link carries a *ticket*, not the token: a secret this server made for the CLI
  (``POST /api/v1/ui/tickets``, with the token), held in memory like the sessions. A link
  opened after the server stopped, while another user's process listens on its port, gives
  that process a ticket that opens nothing once this server is gone;
- replicas sharing PostgreSQL (and a token) behind a load balancer make *signed* tickets
  instead, which any of them takes: the user's name and an expiry, with an HMAC keyed by a
  hash of the admin token. What such a link hands a squatter is a UI session for the rest of
  the ticket's life, never the token (the link carried the token before: every API call,
  code included, for as long as the token lives);
- the cookie's name carries a per-instance suffix, so two dispatchers on one machine never
  overwrite each other's cookie;
- a session only does what the UI does: it never submits code (``POST /dispatches``,
  ``POST /triggers`` need the token), and the API token is never accepted from a cookie.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
import weakref
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from covalent import wire

from .peers import Peer, peer_of

SESSION_TTL = 8 * 3600  # a working day; then the link opens a new one
MAX_SESSIONS = 256  # the oldest go first beyond this
# Requests that carry code to run: the token only, never a browser session.
CODE_CARRYING = re.compile(rf"{re.escape(wire.API)}/(dispatches|triggers)/?")


@dataclass(frozen=True, slots=True)
class _Session:
    peer: Peer
    expires: float
    user: str  # the name of the user whose token opened it (#26)


class Sessions:
    """This server's browser sessions (one table per server, in memory)."""

    def __init__(self, ttl: float = SESSION_TTL, token: str = "") -> None:
        self.ttl = ttl
        # set by a replica: tickets signed with the key that every replica's token gives
        self.signed = False
        self._key = hashlib.sha256(b"covalent-ui-ticket\0" + token.encode()).digest()
        self.cookie = f"covalent_session_{secrets.token_hex(4)}"
        self._table: dict[bytes, _Session] = {}
        self._tickets: dict[bytes, tuple[str, float]] = {}  # digest: (user, expires)
        self._latest: dict[str, tuple[str, float]] = {}  # user: their newest (ticket, expires)
        self._peers: weakref.WeakKeyDictionary[Any, Peer | None] = weakref.WeakKeyDictionary()

    def open(self, request: web.Request, user: str) -> str | None:
        """A new session of ``user`` for whoever sent ``request``: its secret (None: cannot
        tell who)."""
        peer = self._peer(request)
        if peer is None:
            return None
        now = time.monotonic()
        self._table = {k: s for k, s in self._table.items() if s.expires > now}
        while len(self._table) >= MAX_SESSIONS:
            del self._table[next(iter(self._table))]  # the oldest (insertion order)
        secret = secrets.token_urlsafe(32)
        self._table[_digest(secret)] = _Session(peer, now + self.ttl, user)
        return secret

    def ticket(self, user: str) -> str:
        """A new ticket for a link that opens a session of ``user``: what the CLI prints in
        place of the token, so a link opened while another user's process holds this
        dispatcher's port (it stopped) hands over nothing that outlives this server."""
        if self.signed:
            return self._signed(user)
        now = time.monotonic()
        latest = self._latest.get(user)
        if latest is not None and latest[1] - now > self.ttl / 2 \
                and _digest(latest[0]) in self._tickets:
            return latest[0]  # the same link again (`watch covalent status` evicts nothing)
        self._tickets = {k: t for k, t in self._tickets.items() if t[1] > now}
        while len(self._tickets) >= MAX_SESSIONS:
            del self._tickets[next(iter(self._tickets))]
        secret = secrets.token_urlsafe(32)
        self._tickets[_digest(secret)] = (user, now + self.ttl)
        self._latest[user] = (secret, now + self.ttl)
        return secret

    def redeem(self, ticket: str) -> str | None:
        """The user a live ticket of this server (or, on a replica, of any replica) was made
        for; else None."""
        if self.signed and ticket.startswith("s."):
            return self._verify(ticket)
        found = self._tickets.get(_digest(ticket))
        return found[0] if found is not None and found[1] > time.monotonic() else None

    def _signed(self, user: str) -> str:
        """``s.<user>.<expiry>.<mac>``: the wall clock's expiry, which every replica reads
        alike (the same link for half its life, as the in-memory ones)."""
        span = int(self.ttl / 2)
        expires = (int(time.time()) // span + 2) * span if span > 0 else int(time.time() + 1)
        name = base64.urlsafe_b64encode(user.encode()).decode().rstrip("=")
        body = f"s.{name}.{expires}"
        return f"{body}.{self._mac(body)}"

    def _verify(self, ticket: str) -> str | None:
        if not ticket.isascii():  # (compare_digest raises TypeError for other str: a 500)
            return None
        body, _, mac = ticket.rpartition(".")
        parts = body.split(".")
        if len(parts) != 3 or not hmac.compare_digest(mac, self._mac(body)):
            return None
        try:
            expires = int(parts[2])
            user = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        return user if time.time() < expires else None

    def _mac(self, body: str) -> str:
        digest = hmac.new(self._key, body.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def admits(self, request: web.Request) -> str | None:
        """The user of the live session of this server ``request`` carries, if its sender
        opened it; else None."""
        sent = request.cookies.get(self.cookie)
        if not sent:
            return None
        session = self._table.get(_digest(sent))
        if session is None or session.expires <= time.monotonic():
            return None
        return session.user if session.peer == self._peer(request) else None

    def _peer(self, request: web.Request) -> Peer | None:
        """Who is at the other end of the request's connection (looked up once per connection)."""
        transport = request.transport
        if transport is None:
            return None
        if transport not in self._peers:
            self._peers[transport] = peer_of(transport)
        return self._peers[transport]


def carries_code(request: web.Request) -> bool:
    """A request that submits something to run: a dispatch or a (pickled) trigger."""
    return request.method == "POST" and CODE_CARRYING.fullmatch(request.path) is not None


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


SESSIONS = web.AppKey("browser_sessions", Sessions)
VIA_SESSION = web.RequestKey("covalent_via_session", bool)  # set on requests a session let in
