"""How a browser gets into the web UI, and what every page is sent with.

The UI sits behind the same guards as the API (``dispatcher.security``: Host/Origin, token,
content types). A browser cannot send an ``Authorization`` header on a navigation, so:

- the link ``covalent start`` and ``covalent status`` print, ``/?ticket=<ticket>`` (a secret
  the server made for the CLI, ``POST /api/v1/ui/tickets``), or one made by hand,
  ``/?token=<token>``, is accepted by the token guard (on a page's ``GET`` only, any page:
  ``lattice.draw`` prints ``/preview/<id>?ticket=``; a token compared in constant time);
  ``enter`` answers it with a browser session
  (``dispatcher.sessions``: a short-lived secret of its own, bound to the user whose browser
  opened it, in an HttpOnly, SameSite=Strict cookie; never the token) and a redirect to the
  same page without it, so the secret leaves the address bar at once;
- a page refused by a guard is answered with an HTML page saying why (401: open the link
  ``covalent start`` printed); API paths keep their JSON errors;
- every UI response carries a Content-Security-Policy that runs only this server's own script
  files (no inline script: user text in a page can never run), and may not be framed.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import aiohttp_jinja2
from aiohttp import web


from ..errors import Forbidden
from ..keys import SETTINGS
from ..security import is_page, is_ui
from ..sessions import SESSIONS, VIA_SESSION
from ..users import USER, user_of

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")


def link_for(request: web.Request, path: str) -> str:
    """``path`` (a page) as a link that lets the caller's browser in: with a ticket made for
    the caller (never the token: see ``dispatcher.sessions``; replicas sign theirs, so that any
    of them takes it)."""
    if not request.app[SETTINGS].token or request.get(VIA_SESSION):
        return path  # no token to get past, or a browser that is in already
    return f"{path}?ticket={request.app[SESSIONS].ticket(user_of(request).name)}"


def enter(request: web.Request) -> web.HTTPFound:
    """Answer a link ``<page>?ticket=...`` or ``<page>?token=...`` (already checked by the
    token guard): open a session, and go to the page without the secret in its address."""
    rest = [(k, v) for k, v in request.query.items() if k not in ("ticket", "token")]
    target = str(request.rel_url.with_query(rest))
    if target.startswith(("//", "/\\")):  # "//evil.example" is another site to a browser
        target = "/" + target.lstrip("/\\")
    resp = web.HTTPFound(target)
    if request.app[SETTINGS].token:
        sessions = request.app[SESSIONS]
        secret = sessions.open(request, user_of(request).name)
        if secret is None:
            raise Forbidden("cannot tell who is at the other end of this connection")
        resp.set_cookie(sessions.cookie, secret, httponly=True, samesite="Strict", path="/",
                        max_age=int(sessions.ttl))
    return resp


@web.middleware
async def enter_from_link(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A page opened from a link that carries a ticket or the token (the guard, outside this,
    let it in): a session, and the same page without it (a deep link keeps its page)."""
    if is_page(request) and ("ticket" in request.query or "token" in request.query):
        raise enter(request)
    return await handler(request)


@web.middleware
async def ui_responses(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost middleware: HTML error pages for pages, security headers for the UI."""
    try:
        resp = await handler(request)
    except web.HTTPException as exc:  # redirects
        if is_ui(request):
            _harden(exc)
        raise
    if is_page(request) and resp.status >= 400 and isinstance(resp, web.Response) \
            and resp.content_type == "application/json":
        resp = _error_page(request, resp)
    if is_ui(request):
        _harden(resp)
    return resp


def _harden(resp: web.StreamResponse) -> None:
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "no-referrer"


def _error_page(request: web.Request, resp: web.Response) -> web.Response:
    try:
        body = json.loads(resp.body) if isinstance(resp.body, bytes) else {}
    except ValueError:
        body = {}
    page = aiohttp_jinja2.render_template(
        "error.html", request,
        {"status": resp.status, "error": body.get("error", ""), "message": body.get("message", ""),
         "needs_token": resp.status == 401, "dashboard": "", "path": request.path,
         "me": request.get(USER)},
        status=resp.status)
    return page
