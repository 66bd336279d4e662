"""Ask a worker what a running node has printed so far (the drawer of a RUNNING node, #24).

Pulled, never pushed: a worker keeps each running node's capture in a registry of its own
process (``dispatcher.worker.capture.so_far``); the server asks for it only when a browser
asks, which it does only while a drawer shows a running node. The scheduler says which worker
is running the node's task; one ``Client.run`` on that worker reads the text. Nothing is sent
for nodes nobody looks at, and a node that has just ended answers "not running" (its stored
stdout and stderr are then the ones to show).
"""

from __future__ import annotations

import asyncio
from typing import Any

from distributed import Client

from ..compile import node_key, node_label
from ..worker.capture import so_far

ASK_TIMEOUT_S = 5.0


def _processing_on(key: Any, dask_scheduler: Any = None) -> str | None:
    """Run on the scheduler (which passes itself as ``dask_scheduler``): the address of the
    worker running task ``key``, if any."""
    ts = dask_scheduler.tasks.get(key)
    ws = getattr(ts, "processing_on", None) if ts is not None else None
    return str(ws.address) if ws is not None else None


async def output_so_far(client: Client, dispatch_id: str, node_id: int, name: str,
                        kind: str) -> dict[str, Any]:
    """``{"running": bool, "stdout", "stderr", "worker"}`` of a node now running on a worker."""
    from covalent.wire import NodeKind

    key = node_key(dispatch_id, node_id, node_label(name, NodeKind(kind)))
    try:
        worker = await asyncio.wait_for(client.run_on_scheduler(_processing_on, key),  # type: ignore[no-untyped-call]
                                        ASK_TIMEOUT_S)
        if worker is None:
            return {"running": False}
        answers = await asyncio.wait_for(
            client.run(so_far, dispatch_id, node_id, workers=[worker], on_error="return"),
            ASK_TIMEOUT_S)
    except (OSError, TimeoutError):  # the scheduler or worker is gone: nothing to show now
        return {"running": False}
    found = answers.get(worker)
    if not isinstance(found, dict):  # not started yet in its thread, or ended meanwhile
        return {"running": False, "worker": worker}
    return {"running": True, "worker": worker, **found}
