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


async def wait_all(futures: list[Future[Any]], chunk: int = 1000) -> None:
    """Return once every future is finished, erred or cancelled (a lost one is computed again
    by Dask, and waited for). Waits ``chunk`` futures at a time, so that a dispatch of
    100,000 sinks never holds the event loop for long (each wait makes a coroutine per future).
    """
    while True:
        start = 0
        while start < len(futures):
            pending = [f for f in futures[start:start + chunk] if f.status in ("pending", "lost")]
            if not pending:
                start += chunk
                continue
            try:
                await _wait(pending)
            except FuturesCancelledError:
                pass  # cancelled ones are done too
        if not any(f.status in ("pending", "lost") for f in futures):
            return  # nothing was lost while later chunks were waited for


async def cancel(client: Client, futures: list[Future[Any]], chunk: int = 100) -> None:
    """Cancel ``futures`` (force: even if other clients want them), ``chunk`` at a time.

    One ``client.cancel`` of n keys costs the scheduler n * n steps (it releases the whole
    list once per key), which froze it for 11 minutes on a 100,000-node dispatch; slices of
    100 cost n * 100.
    """
    for start in range(0, len(futures), chunk):
        await client.cancel(futures[start:start + chunk], force=True)
