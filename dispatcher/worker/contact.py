"""How a worker reaches its dispatcher: a worker plugin holding the address and the token.

Registered by the dispatcher when it starts (and again when it learns its own address), so
neither travels inside a task's spec through the scheduler.
"""

from __future__ import annotations

from typing import Any

from distributed import get_worker
from distributed.diagnostics.plugin import WorkerPlugin


class ServerContact(WorkerPlugin):
    """The dispatcher's URL and token, kept by each worker."""

    name = "covalent-contact"

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token

    def setup(self, worker: Any) -> None:
        pass


def server_contact() -> ServerContact:
    """This worker's contact, or RuntimeError if the dispatcher never registered one."""
    plugin = get_worker().plugins.get(ServerContact.name)
    if not isinstance(plugin, ServerContact) or not plugin.url:
        raise RuntimeError("this worker does not know its dispatcher's address; cannot run a sublattice")
    return plugin
