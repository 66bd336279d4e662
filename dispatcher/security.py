"""Refuse every request that a web page or another local user could send.

The dispatcher runs pickled code by design, so the only safe caller is its own user. Three
middlewares, run in this order and before any body is read, parsed or unpickled:

- ``host_guard``: the ``Host`` header must name this server (loopback names, the configured
  host, this machine's names, names the user adds), else 403: a page on ``evil.example`` that
  rebinds its DNS to 127.0.0.1 cannot read anything. A foreign ``Origin`` is refused (403).
- ``token_guard``: with a token (the default), every request carries ``Authorization: Bearer
  <token>`` (the server's own token: the built-in admin; or a user's, ``users``) or, for the web UI, the cookie of a browser session (``sessions``: a secret of its
  own, bound to the user who opened it, never the token) that the link ``/?token=`` (accepted
  on ``GET /`` only) opens. A session never submits code. Compared in constant time;
  malformed headers are a 401, never a 500. The token is never taken from a cookie.
- ``content_type_guard``: a request with a body-carrying method must say
  ``application/x-covalent-frame`` (dispatch submissions) or ``application/json`` (everything
  else). Neither is a CORS "simple" type, so a browser must ask first (a preflight), which is
  never granted: a cross-site form, ``text/plain`` or ``no-cors`` request does nothing.
"""

from __future__ import annotations

import hmac
import math
import socket
import string
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware

from covalent import wire

from .errors import Forbidden, Unauthorized, UnsupportedMediaType
from .sessions import VIA_SESSION, Sessions, carries_code
from .users import BUILTIN, USER, Accounts, User

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "localhost.localdomain"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


MIN_TOKEN_BITS = 256  # what 32 random bytes are worth


def weak_token(token: str) -> str | None:
    """Why ``token`` is too weak to guard a non-loopback address, or None if it is not.

    It must be worth 32 random bytes: its length times the bits of the smallest alphabet it
    is written in (digits, hex, URL-safe base64, printable), and enough distinct characters (16,
    or 10 of hex's 16: a random 64-digit hex token misses one of them about once in 80).

    >>> weak_token("x") is not None, weak_token("a" * 64) is not None
    (True, True)
    >>> import secrets; weak_token(secrets.token_urlsafe(32)), weak_token(secrets.token_hex(32))
    (None, None)
    """
    alphabet = _alphabet(token)
    bits = len(token) * math.log2(alphabet)
    if bits >= MIN_TOKEN_BITS and len(set(token)) >= min(16, alphabet // 2 + 2):
        return None
    return (f"its token is worth about {bits:.0f} bits, less than the {MIN_TOKEN_BITS} of 32 "
            "random bytes (python -c 'import secrets; print(secrets.token_urlsafe(32))' makes one)")


def _alphabet(token: str) -> int:
    chars = set(token)
    for alphabet in (string.digits, string.hexdigits.lower(), string.hexdigits.upper(),
                     string.ascii_letters + string.digits + "-_"):
        if chars <= set(alphabet):
            return len(set(alphabet))
    return 94  # printable ASCII, or more


def allowed_hosts(bind_host: str, extra: Iterable[str] = (), public_url: str = "") -> frozenset[str]:
    """The host names a request may address this server by (lower case, no port): loopback,
    ``extra``, the bind address and the host of ``public_url`` (the workers' requests, through
    a load balancer that passes its own name on).

    >>> sorted(allowed_hosts("127.0.0.1", ["Lab-Box"]))[:2]
    ['127.0.0.1', '::1']
    >>> "lab-box" in allowed_hosts("127.0.0.1", ["Lab-Box"])
    True
    >>> "lb.example" in allowed_hosts("127.0.0.1", (), "http://LB.example:8080")
    True
    """
    names = set(LOOPBACK_NAMES) | {h.strip().lower() for h in extra if h.strip()}
    if public_url:
        names.add((urlsplit(public_url).hostname or "").lower())
    if bind_host not in ("", "0.0.0.0", "::"):
        names.add(bind_host.lower())
    else:  # bound to every interface: this machine's own names are ours too
        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    return frozenset(names)


def host_name(value: str) -> str:
    """The host part of a ``Host`` header, without port or IPv6 brackets, lower case.

    >>> host_name("LocalHost:48008"), host_name("[::1]:1"), host_name("evil.example")
    ('localhost', '::1', 'evil.example')
    """
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    if value.count(":") > 1:  # a bare IPv6 address
        return value
    return value.partition(":")[0]


def host_guard(hosts: frozenset[str]) -> Middleware:
    """Middleware: 403 unless ``Host`` names this server and ``Origin`` (if any) is this server."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = host_name(request.headers.get("Host", ""))
        if host not in hosts:
            raise Forbidden(f"requests must address this dispatcher by one of its names, not {host!r}; "
                            "add a name with --allow-host")
        origin = request.headers.get("Origin")
        if origin is not None and not _same_origin(origin, request):
            raise Forbidden(f"cross-origin requests are refused (Origin {origin!r})")
        return await handler(request)

    return guard


def _same_origin(origin: str, request: web.Request) -> bool:
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False  # "null" (sandboxed frames, file://) and anything else odd
    own_host = request.headers.get("Host", "")
    own_port = urlsplit(f"http://{own_host}").port
    return (parts.hostname.lower() == host_name(own_host)
            and (port or (443 if parts.scheme == "https" else 80)) == (own_port or 80))


def token_guard(token: str, sessions: Sessions | None = None,
                passed: Callable[[Any], None] | None = None,
                accounts: Accounts | None = None) -> Middleware:
    """Middleware: 401 unless the request carries ``token`` (header, or the link's query), a
    live user's token (``accounts``) or, short of code to run, a browser session of
    ``sessions`` whose user is live; the user it acts as goes in ``request[USER]``. ``passed``
    hears of each request that gets through (its connection's protocol: see
    ``connections.Gate``)."""
    expected = token.encode()

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        request[USER] = (await _identify(request, expected, sessions, accounts) if token
                         else BUILTIN)
        if passed is not None:
            passed(request.protocol)
        return await handler(request)

    return guard


async def _identify(request: web.Request, expected: bytes, sessions: Sessions | None,
                    accounts: Accounts | None) -> User:
    """Who sent ``request``: the built-in admin, a user, or the user of its browser session."""
    for sent in (bearer(request), _link_token(request)):
        if _matches(sent, expected):
            return BUILTIN
        if sent and accounts is not None:
            user = await accounts.by_token(sent)
            if user is not None:
                return user
    name = sessions.admits(request) if sessions is not None else None
    ticket = _link_ticket(request)
    if ticket and sessions is not None:
        name = sessions.redeem(ticket)
    user = None
    if name is not None:
        user = BUILTIN if accounts is None else await accounts.by_name(name)
    if user is None:
        raise Unauthorized("this dispatcher requires a token: the SDK and the CLI read it from "
                           "the config file `covalent start` writes (or COVALENT_TOKEN); a "
                           "revoked token opens nothing")
    if carries_code(request):
        raise Forbidden(f"a browser session cannot {request.method} {request.path}: "
                        "that takes the token (the SDK and the CLI send it)")
    request[VIA_SESSION] = True
    return user


def _link_token(request: web.Request) -> str:
    """The token of a link into a page (``GET /?token=...``, ``GET /dispatches/<id>?token=``),
    never of an API call, an asset or a fragment."""
    return request.query.get("token", "") if is_page(request) else ""


def _link_ticket(request: web.Request) -> str:
    """The ticket of a link the CLI or the SDK prints (``GET /?ticket=...``, or a deeper page's:
    ``lattice.draw``'s preview), never of an API call, an asset or a fragment."""
    return request.query.get("ticket", "") if is_page(request) else ""


def is_ui(request: web.Request) -> bool:
    """A request of the web UI's (not of the API)."""
    return not request.path.startswith(wire.API + "/") and request.path != wire.API


def is_page(request: web.Request) -> bool:
    """A navigation a person sees (not an asset, a fragment or the event stream)."""
    return (request.method == "GET" and is_ui(request)
            and not request.path.startswith(("/static/", "/ui/")))


def bearer(request: web.Request) -> str:
    """The token of the request's ``Authorization: Bearer`` header ("" if none)."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def _matches(sent: str, expected: bytes) -> bool:
    # Header values may hold any byte; compare bytes so odd input is a mismatch, not a 500.
    return hmac.compare_digest(sent.encode("utf-8", "surrogateescape"), expected)


@web.middleware
async def content_type_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Middleware: 415 for a body-carrying request that is not a frame or JSON. (A DELETE
    without a body, ``curl -X DELETE``, needs none: no page can send a DELETE without a CORS
    preflight, which is never granted.)"""
    if request.method in _BODY_METHODS and (request.method != "DELETE" or request.body_exists):
        wanted = (wire.CONTENT_TYPE
                  if request.method == "POST" and request.path == wire.API + "/dispatches"
                  else "application/json")
        if request.content_type != wanted:
            raise UnsupportedMediaType(
                f"{request.method} {request.path} takes Content-Type {wanted}, "
                f"not {request.content_type or 'none'}")
    return await handler(request)
