"""Submit a compiled graph to Dask and wait for futures: the one place that uses Dask's
private API.

``LLGExpr(dsk, _determ_token=name)`` names the graph ourselves. Without a name Dask tokenizes
every task (pickling each spec) to name it, which costs more than running a small workflow.
``distributed.client._wait`` waits for many futures of a given client without a callback per
future (the public ``distributed.wait`` insists on a default client, which the dispatcher
never sets). ``hold`` tells the scheduler this client wants keys it did not ask for at
submit (``client-desires-keys``, what Dask itself sends for futures it unpickles).
``tests/dispatcher/test_dask_graph.py`` fails loudly if Dask changes any of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dask._expr import LLGExpr
from dask.task_spec import Task
from distributed import Client, Future
from distributed.client import FuturesCancelledError, _wait


def submit_graph(client: Client, dsk: Mapping[Any, Task], keys: list[Any], name: str,
                 priority: int) -> list[Future[Any]]:
    """Submit ``dsk`` as one graph called ``name``; the futures of ``keys``, in order."""
    expr = LLGExpr(dict(dsk), _determ_token=name)
    futures: list[Future[Any]] = client.get(expr, keys, sync=False, priority=priority)
    return futures


def hold(client: Client, keys: list[Any]) -> list[Future[Any]]:
    """Futures on keys of a submitted graph, which the scheduler now keeps for this client
    (so cancelling what consumed them does not release them)."""
    futures: list[Future[Any]] = [Future(key, client) for key in keys]
    client._send_to_scheduler({"op": "client-desires-keys", "keys": list(keys)})
    return futures


async def wait_all(futures: list[Future[Any]]) -> None:
    """Return once every future is finished, erred or cancelled (a lost one is computed again
    by Dask, and waited for)."""
    pending = list(futures)
    while pending:
        try:
            await _wait(pending)
        except FuturesCancelledError:
            pass  # cancelled ones are done too
        pending = [f for f in pending if f.status in ("pending", "lost")]
