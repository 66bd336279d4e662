"""Run a sublattice node on a worker: build its graph there and run it as a child dispatch.

The child's graph is built from the sublattice's inputs at run time, so its shape may depend
on upstream outputs (a dynamic workflow). The child is submitted to the same dispatcher with
this node as its parent, and runs on the same cluster. While waiting, the task secedes from
the worker's thread pool so the child's tasks can use the thread (no deadlock, even nested).
"""

from __future__ import annotations

import uuid
from typing import Any

from covalent import _client, wire
from covalent._config import ClientConfig
from covalent._dispatch import build_submission
from covalent._results_manager.result import Result

from .execute import NodeSpec

_POLL_S = 30.0


def run_sublattice(spec: NodeSpec, lattice: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Dispatch ``lattice(*args, **kwargs)`` as a child of ``spec``'s node; return its result."""
    if not spec.server:
        raise RuntimeError("this dispatcher does not know its own address; cannot run a sublattice")
    cfg = ClientConfig(url=spec.server, token=spec.token)
    # The child's id follows from its parent node: if this node runs again (its worker died,
    # the dispatcher restarted), it finds the child already submitted and waits for it instead
    # of starting a second one (issue #11).
    child_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"covalent:{spec.dispatch_id}/{spec.node_id}"))
    body = build_submission(lattice, tuple(args), kwargs, dispatch_id=child_id, disable_run=False)
    _client.request_json(cfg, "POST", "/dispatches", body=body, content_type=wire.CONTENT_TYPE,
                         query={"parent": spec.dispatch_id, "parent_node": spec.node_id})
    result = _wait_seceded(cfg, child_id)
    if result.status != "COMPLETED":
        raise RuntimeError(f"sublattice dispatch {child_id} ended {result.status}: {result.error}")
    return result.result


def _wait_seceded(cfg: ClientConfig, child_id: str) -> Result:
    from distributed import rejoin, secede

    seceded = True
    try:
        secede()
    except ValueError:
        seceded = False  # not on a worker thread (called directly): just block
    try:
        while True:
            _, _, data = _client.request(cfg, "GET", f"/dispatches/{child_id}",
                                         query={"wait": _POLL_S}, timeout=_POLL_S + 30)
            header, blobs = wire.unpack(data)
            result = Result._from_wire(header, blobs, cfg.url)
            if result.status.is_terminal:
                return result
    finally:
        if seceded:
            rejoin()
