"""App keys of the web UI's state: the live hub, the server log's recent records, parsed graphs."""

from __future__ import annotations

from aiohttp import web

from .live import LiveHub
from .logs import LogBuffer
from .views import GraphCache

LIVE = web.AppKey("ui_live", LiveHub)
LOG_BUFFER = web.AppKey("ui_log_buffer", LogBuffer)
GRAPHS = web.AppKey("ui_graphs", GraphCache)
