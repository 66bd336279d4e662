"""Many small workflows at once: throughput and latency, ours against raw Dask.

Each round sends ``n`` copies of the 10-node workflow (``workloads.small_workflow``) from
``threads`` threads: raw Dask as ``n`` plain graphs with fresh keys through one shared client
(each thread a ``client.get``) on the standalone cluster, then ours as ``n``
``ct.dispatch`` + ``ct.get_result(wait=True)``. Rounds alternate raw, ours. A latency is one
workflow's submit-to-result time in its thread; throughput is ``n`` over the round's wall time.
A workflow that fails or returns a wrong value is counted, not raised, so the row says how many
of all completed with the right result.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .measure import percentile
from .workloads import Workload, small_workflow

EXPECTED = 45  # sum(1 + i for i in range(9))


def _round(run: Callable[[Workload], Any], w: Workload, n: int,
           threads: int) -> tuple[float, list[float], list[str]]:
    """(wall s, latencies of the right results, errors) of one round."""
    def one(_: int) -> tuple[float, str | None]:
        t = time.perf_counter()
        try:
            value = run(w)
        except Exception as exc:  # counted and reported in the row, not swallowed
            return time.perf_counter() - t, f"{type(exc).__name__}: {exc}"
        error = None if value == EXPECTED else f"wrong result {value!r}"
        return time.perf_counter() - t, error

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        outcomes = list(pool.map(one, range(n)))
    wall = time.perf_counter() - t0
    return wall, [lat for lat, err in outcomes if err is None], [e for _, e in outcomes if e]


def concurrent(runs: dict[str, Callable[[Workload], Any]], n: int, threads: int,
               rounds: int) -> dict[str, Any]:
    """One row for ``runs`` (side name -> runner, e.g. raw then ours), alternated per round."""
    w = small_workflow()
    walls: dict[str, list[float]] = {s: [] for s in runs}
    lats: dict[str, list[float]] = {s: [] for s in runs}
    errors: dict[str, list[str]] = {s: [] for s in runs}
    for _ in range(rounds):
        for side, run in runs.items():
            wall, ok, errs = _round(run, w, n, threads)
            walls[side].append(wall)
            lats[side] += ok
            errors[side] += errs
    row: dict[str, Any] = {"workload": f"concurrent-{n}x10", "threads": threads,
                           "rounds": rounds, "dispatches": n * rounds}
    for side in runs:
        prefix = f"{side}_"
        row[f"{prefix}completed"] = len(lats[side])
        row[f"{prefix}throughput_per_s"] = n / statistics.median(walls[side])
        row[f"{prefix}p50_s"] = percentile(lats[side], 0.5) if lats[side] else float("nan")
        row[f"{prefix}p99_s"] = percentile(lats[side], 0.99) if lats[side] else float("nan")
        row[f"{prefix}errors"] = errors[side][:5]
    if "ours" in runs and "raw" in runs:
        row["throughput_ratio"] = row["ours_throughput_per_s"] / row["raw_throughput_per_s"]
    return row
