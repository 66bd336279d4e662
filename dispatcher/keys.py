"""App keys through which handlers reach the server's state."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .runner import Runner
from .settings import Settings
from .store import SqliteStore
from .trigger_service import TriggerService

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", SqliteStore)
RUNNER = web.AppKey("runner", Runner)
CLUSTER_INFO = web.AppKey("cluster_info", dict)
TRIGGERS = web.AppKey("triggers", TriggerService)
