"""Measure a client's memory while it fetches a result, in a fresh process of its own.

    python -m benchmarks.memory ours ADDR DISPATCH_ID   # ct.get_result(id, wait=True)
    python -m benchmarks.memory raw SCHEDULER N COUNT   # client.get of arrays(N, COUNT)

The child imports everything first (SDK, Dask client, numpy, the workloads), resets its own
VmHWM to its RSS (``/proc/self/clear_refs``), reads that RSS as its baseline, makes the one
call, and prints ``{"baseline_mib", "peak_mib", "above_baseline_mib", "peak_reset", "result"}``.
``above_baseline_mib`` is the client memory the fetch cost beyond what the process already
held; the workloads measured here return a single number, so it is all overhead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from typing import Any

import distributed
import numpy  # noqa: F401  (imported before the baseline: results may unpickle into it)

import covalent as ct

from dispatcher.procinfo import peak_rss_mib, reset_peak_rss, rss_mib
from .server import REPO
from .workloads import arrays

CHILD_TIMEOUT_S = 900


def _fetch_ours(addr: str, dispatch_id: str) -> Any:
    result = ct.get_result(dispatch_id, wait=True, dispatcher_addr=addr)
    assert isinstance(result, ct.Result)  # not status_only
    if result.status != "COMPLETED":
        raise SystemExit(f"dispatch {dispatch_id} ended {result.status}: {result.error}")
    return result.result


def _measured(fetch: Callable[[], Any]) -> dict[str, Any]:
    pid = os.getpid()
    reset = reset_peak_rss(pid)
    baseline = rss_mib(pid)
    value = fetch()
    peak = peak_rss_mib(pid)
    return {"baseline_mib": baseline, "peak_mib": peak, "above_baseline_mib": peak - baseline,
            "peak_reset": reset, "result": float(value)}


def child(argv: list[str]) -> dict[str, Any]:
    """Child side: one measured fetch; everything it needs is imported by now."""
    if argv[0] == "ours":
        return _measured(lambda: _fetch_ours(argv[1], argv[2]))
    with distributed.Client(argv[1], set_as_default=False) as client:
        dsk, key = arrays(int(argv[2]), int(argv[3])).raw(uuid.uuid4().hex)
        return _measured(lambda: client.get(dsk, key))


def measure(*args: str) -> dict[str, Any]:
    """Parent side: run the child with ``args`` and return what it reports."""
    proc = subprocess.run([sys.executable, "-m", "benchmarks.memory", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"memory child {args[0]} failed:\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


if __name__ == "__main__":
    print(json.dumps(child(sys.argv[1:])))
