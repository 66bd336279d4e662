"""The web UI, served by the dispatcher at its root (issues #15, #24): ``setup(app)`` adds it.

Server-rendered pages (jinja2 templates in ``templates/``), a few small script files in
``static/`` (our own, plus htmx vendored with its licence), no build step. The browser draws
the graph from coordinates computed by ``covalent.layout`` and follows a running dispatch
through server-sent events fed by the Recorder's commit announcements (``live``). The UI sits
behind the API's guards (``access`` explains how a browser gets in; a page refused for want of
the token is answered by ``_token_page`` here) and reads the store only through typed records:
it never unpickles.

    listing.py   the dispatch list (filters, age, pages)    routes.py   a dispatch's page, node
    drawer.py    the node drawer (inputs, tracebacks,                    table, graph JSON, events,
                 reused outputs, output so far)                          the logs page
    peek.py      asks a worker what a running node printed  timeline.py bars, lanes, critical path
    trigger_page.py  /triggers                              api.py      /api/v1 additions
    views.py     counts, times, sizes, caches               live.py     commits to watchers
                                                            remote.py   other replicas' commits
    logs.py      the logs page's reader                     access.py   token link, headers
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web
from markupsafe import Markup

from ..keys import RECORDER, RUNNER, STORE
from ..security import is_page
from . import access, api, drawer, listing, preview, routes, timeline, trigger_page
from .access import Handler
from .keys import GRAPHS, LIVE, LOG_BUFFER
from .live import LiveHub
from .logs import LogBuffer
from .remote import RemoteFeed
from .views import GraphCache, at, duration, label, plural, size, when

STATIC = Path(__file__).parent / "static"


def setup(app: web.Application) -> None:
    """Add the UI's routes, templates, static files and live hub to the dispatcher's ``app``."""
    env = aiohttp_jinja2.setup(app, loader=jinja2.PackageLoader("dispatcher.ui", "templates"),
                               autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters.update(when=when, at=at, duration=duration, label=label, size=size)
    env.globals.update(plural=plural, inline_css=_inline_css)
    app.middlewares.append(access.enter_from_link)  # inside the guards: a link let in
    app.middlewares.insert(0, _token_page)
    app.middlewares.insert(0, access.ui_responses)
    app.add_routes(listing.routes)
    app.add_routes(routes.routes)
    app.add_routes(drawer.routes)
    app.add_routes(timeline.routes)
    app.add_routes(trigger_page.routes)
    app.add_routes(api.routes)
    preview.setup(app)  # lattice.draw's preview page (#22)
    app.router.add_static("/static/", STATIC, name="static", append_version=True)
    app[GRAPHS] = GraphCache()
    app.cleanup_ctx.append(_live_ctx)
    app.on_shutdown.append(_close_streams)


@functools.cache
def _inline_css() -> Markup:
    """The stylesheet, for the page shown before the browser is let in (our own file)."""
    return Markup((STATIC / "ui.css").read_text(encoding="utf-8"))


@web.middleware
async def _token_page(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A page refused for want of the token: say how to get in, at the address the browser
    used, and whether the token it brought was wrong (the guard answered JSON)."""
    resp = await handler(request)
    if resp.status == 401 and is_page(request) and isinstance(resp, web.Response) \
            and resp.content_type == "application/json":
        return aiohttp_jinja2.render_template("token.html", request, {
            "here": f"{request.scheme}://{request.host}", "wrong": bool(request.query.get("token") or request.query.get("ticket")),
            "path": request.path}, status=401)
    return resp


async def _close_streams(app: web.Application) -> None:
    """Before the server waits for open requests: event streams and long-polls end now."""
    hub = app.get(LIVE)
    if hub is not None:
        hub.close()


async def _live_ctx(app: web.Application) -> AsyncIterator[None]:
    """The hub hears every commit from the recorder (and, on a replica, what the others commit
    to the dispatches watched here); the log buffer keeps recent records."""
    hub = LiveHub()
    app[LIVE] = hub
    unsubscribe = app[RECORDER].subscribe(hub.on_commit)
    runner = app[RUNNER]
    feed = None
    if runner.replica is not None:  # other replicas write to the same database
        feed = RemoteFeed(hub, app[STORE], lambda d: d in runner.runs)
        hub.follower = feed.follow
    buffer = LogBuffer()
    app[LOG_BUFFER] = buffer
    root = logging.getLogger()
    root.addHandler(buffer)
    try:
        yield
    finally:
        hub.close()
        if feed is not None:
            await feed.close()
        root.removeHandler(buffer)
        unsubscribe()
