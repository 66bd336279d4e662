"""App keys through which handlers reach the server's state."""

from __future__ import annotations

from aiohttp import web

from .executors import ExecutorTable
from .recorder import Recorder
from .runner import Runner
from .settings import Settings
from .store import DispatchStore
from .trigger_service import TriggerService

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", DispatchStore)
RECORDER = web.AppKey("recorder", Recorder)
RUNNER = web.AppKey("runner", Runner)
CLUSTER_INFO = web.AppKey("cluster_info", dict)
TRIGGERS = web.AppKey("triggers", TriggerService)
EXECUTORS = web.AppKey("executors", ExecutorTable)
