"""What a worker knows of its dispatcher: a worker plugin with its address, token and the store.

Registered by the dispatcher when it starts (and again when it learns its own address), so none
of it travels inside a task's spec through the scheduler. ``worker_context()`` gives a running
task the plugin of the worker it runs on.
"""

from __future__ import annotations

from typing import Any

from distributed import get_worker
from distributed.diagnostics.plugin import WorkerPlugin

from .blobs import BlobStore


class WorkerContext(WorkerPlugin):
    """The dispatcher's URL and token (sublattices), the blob store outputs go to, and how
    long a node past its time limit may take to stop before its worker is restarted."""

    name = "covalent-context"

    def __init__(self, url: str, token: str, store_root: str,
                 storage_options: dict[str, Any] | None = None,
                 time_limit_grace: float = 10.0) -> None:
        self.url = url
        self.token = token
        self.store_root = store_root
        self.storage_options = storage_options or {}
        self.time_limit_grace = time_limit_grace
        self._store: BlobStore | None = None

    def setup(self, worker: Any) -> None:
        self._store = BlobStore(self.store_root, self.storage_options)

    @property
    def store(self) -> BlobStore:
        if self._store is None:
            self._store = BlobStore(self.store_root, self.storage_options)
        return self._store

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_store"] = None
        return state


def worker_context() -> WorkerContext:
    """This worker's context, or RuntimeError if the dispatcher never registered one."""
    plugin = get_worker().plugins.get(WorkerContext.name)
    if not isinstance(plugin, WorkerContext):
        raise RuntimeError("this worker was not set up by a Covalent dispatcher (no context plugin)")
    return plugin
