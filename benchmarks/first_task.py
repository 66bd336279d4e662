"""Submit to first task running, for a large fan-out: ours against raw Dask's own ``client.get``.

The workload is ``workloads.fan_out(n, stamped=True)``: its tasks call ``stamped_inc``, and the first
one to run anywhere writes its start time (``time.time()``) to ``$COVALENT_BENCH_STAMP``, a path
both clusters' workers got in their environment. A run removes that file, notes the time, and
submits:

- ``raw``: ``client.get(graph, key, sync=False)`` on the standalone cluster, the graph built
  beforehand (a Dask user's dict), as the main benchmark does;
- ``ours``: what ``ct.dispatch(lattice)(n)`` does: build the graph in the client (the lattice
  function runs), send it; the server stores it and submits it to Dask.

The figure is the stamp minus the time noted; ``returned`` is when the submitting call came
back; ``sent_first`` counts ours from the moment its request left the client (raw Dask's graph
is built before its clock starts too). Then the run is cancelled (raw: the future released; ours: ``ct.cancel``, then waiting for
the CANCELLED result) and the next starts once the scheduler holds no task. Sides alternate.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import distributed

import covalent as ct
from covalent import wire
from covalent._client import request_json
from covalent.api import submission_parts
from covalent.config import client_config

from .workloads import Workload

TIMEOUT_S = 900.0


def _stamped_after(stamp: Path, t0: float) -> float:
    """Seconds from ``t0`` to the time the first task wrote (polls: it is another process)."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        try:
            text = stamp.read_text()
        except FileNotFoundError:
            text = ""
        if text:
            return float(text) - t0
        if time.monotonic() > deadline:
            raise SystemExit(f"no task started within {TIMEOUT_S:.0f} s")
        time.sleep(0.002)


def _idle(client: distributed.Client) -> None:
    """Until neither the scheduler nor a worker holds a task: a cancelled task a worker still
    ran would stamp the next run."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        if not client.run_on_scheduler(_scheduler_tasks) and not any(
                client.run(_worker_tasks).values()):
            return
        time.sleep(0.2)  # the cluster is another process: nothing to wait on


def _scheduler_tasks(dask_scheduler: Any = None) -> int:
    return len(dask_scheduler.tasks)


def _worker_tasks(dask_worker: Any = None) -> int:
    return len(dask_worker.state.tasks)


def raw_first(client: distributed.Client, stamp: Path
              ) -> Callable[[Workload], tuple[float, float, float]]:
    def run(w: Workload) -> tuple[float, float, float]:
        dsk, key = w.raw(uuid.uuid4().hex)
        stamp.unlink(missing_ok=True)
        t0 = time.time()
        future = client.get(dsk, key, sync=False)
        returned = time.time() - t0
        first = _stamped_after(stamp, t0)
        client.cancel([future], force=True)  # (not timed, as below)
        future.release()
        _idle(client)
        return first, returned, first
    return run


def ours_first(addr: str, client: distributed.Client, stamp: Path
               ) -> Callable[[Workload], tuple[float, float, float]]:
    """``client``: a plain client of the dispatcher's scheduler, to see it idle again. What
    ``ct.dispatch`` does, in two steps: build the request (the lattice runs in the client),
    then send it; the third figure is first task counted from the request."""
    def run(w: Workload) -> tuple[float, float, float]:
        stamp.unlink(missing_ok=True)
        dispatch_id = str(uuid.uuid4())
        t0 = time.time()
        body = submission_parts(w.lattice, w.args, {}, dispatch_id=dispatch_id, disable_run=False)
        sent = time.time()
        request_json(client_config(addr), "POST", "/dispatches", body=body,
                     content_type=wire.CONTENT_TYPE)
        returned = time.time() - t0
        first = _stamped_after(stamp, t0)
        ct.cancel(dispatch_id, dispatcher_addr=addr)
        ct.get_result(dispatch_id, wait=True, dispatcher_addr=addr, status_only=True)
        _idle(client)
        return first, returned, first - (sent - t0)
    return run


def first_task(w: Workload, runs: dict[str, Callable[[Workload], tuple[float, float, float]]],
               repeats: int) -> dict[str, Any]:
    """One row: each side's median submit-to-first-task, submit-call and request-to-first-task
    times, alternated."""
    samples: dict[str, list[tuple[float, float, float]]] = {side: [] for side in runs}
    for _ in range(repeats):
        for side, run in runs.items():
            samples[side].append(run(w))
    row: dict[str, Any] = {"workload": w.name, "nodes": w.nodes, "repeats": repeats,
                           "first_task": True}
    for side, got in samples.items():
        row[f"{side}_first_s"] = statistics.median(f for f, _, _ in got)
        row[f"{side}_returned_s"] = statistics.median(r for _, r, _ in got)
        row[f"{side}_sent_first_s"] = statistics.median(s for _, _, s in got)
        row[f"{side}_first_samples_s"] = [f for f, _, _ in got]
    if "ours" in runs and "raw" in runs:
        row["first_ratio"] = row["ours_first_s"] / row["raw_first_s"]
        row["sent_first_ratio"] = row["ours_sent_first_s"] / row["raw_first_s"]
    return row
