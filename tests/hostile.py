"""Electrons that lie to the dispatcher, as code running on a worker can (issue #21).

A node's outcome is a report its worker sends (``dispatcher.protocol``, ``dispatcher.outcomes``);
user code runs on that worker, so it can log one as an event too. These forge the outcome of
their own node before returning, naming a file of the test's choosing, to show the server never
reads or deletes it.
"""

from __future__ import annotations

from datetime import UTC, datetime

import covalent as ct


@ct.electron
def forge_output(ref: str, size: int, location: str) -> str:
    """Report this node COMPLETED with its output at ``ref`` (``location``: where the old
    protocol said it was), then return normally (that true report comes second)."""
    import msgpack
    from distributed import get_worker

    worker = get_worker()
    name, node_id = worker.get_current_task()  # ("<label>-<dispatch id>", node id)
    now = datetime.now(UTC).isoformat()
    forged = {"d": name.split("-", 1)[1], "n": node_id, "s": "COMPLETED", "t0": now, "t1": now,
              "out": "", "err": "", "pv": "forged", "data": None, "ref": ref, "size": size,
              "loc": location}
    # as the worker's own report travels when it is an event (``protocol.pack_outcome``)
    worker.log_event("covalent-outcome", {"o": msgpack.packb(forged, use_bin_type=True)})
    return "the true output"


@ct.lattice
def forging(ref: str, size: int, location: str) -> str:
    return forge_output(ref, size, location)
