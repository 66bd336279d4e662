"""The web UI, served by the dispatcher at its root (issue #15): ``setup(app)`` adds it.

Server-rendered pages (jinja2 templates in ``templates/``), a few small script files in
``static/`` (our own, plus htmx vendored with its licence), no build step. The browser draws
the graph from coordinates computed here (``layout``) and follows a running dispatch through
server-sent events fed by the Recorder's commit announcements (``live``). The UI sits behind
the API's guards (``access`` explains how a browser gets in) and reads the store only through
typed records: it never unpickles.

    routes.py  pages, fragments, graph JSON, event streams    api.py   /api/v1 additions
    layout.py  layers, crossing reduction, aggregation (pure)  views.py counts, times, caches
    live.py    the hub between commits and watchers            logs.py  the logs page's reader
    access.py  the token link, HTML error pages, security headers
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from ..keys import RECORDER
from . import access, api, preview, routes
from .keys import GRAPHS, LIVE, LOG_BUFFER
from .live import LiveHub
from .logs import LogBuffer
from .views import GraphCache, duration, label, when

STATIC = Path(__file__).parent / "static"


def setup(app: web.Application) -> None:
    """Add the UI's routes, templates, static files and live hub to the dispatcher's ``app``."""
    env = aiohttp_jinja2.setup(app, loader=jinja2.PackageLoader("dispatcher.ui", "templates"),
                               autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters.update(when=when, duration=duration, label=label)
    app.middlewares.insert(0, access.ui_responses)
    app.add_routes(routes.routes)
    app.add_routes(api.routes)
    preview.setup(app)  # lattice.draw's preview page (#22)
    app.router.add_static("/static/", STATIC, name="static", append_version=True)
    app[GRAPHS] = GraphCache()
    app.cleanup_ctx.append(_live_ctx)
    app.on_shutdown.append(_close_streams)


async def _close_streams(app: web.Application) -> None:
    """Before the server waits for open requests: event streams and long-polls end now."""
    hub = app.get(LIVE)
    if hub is not None:
        hub.close()


async def _live_ctx(app: web.Application) -> AsyncIterator[None]:
    """The hub hears every commit from the recorder; the log buffer keeps recent records."""
    hub = LiveHub()
    app[LIVE] = hub
    unsubscribe = app[RECORDER].subscribe(hub.on_commit)
    buffer = LogBuffer()
    app[LOG_BUFFER] = buffer
    root = logging.getLogger()
    root.addHandler(buffer)
    try:
        yield
    finally:
        hub.close()
        root.removeHandler(buffer)
        unsubscribe()
