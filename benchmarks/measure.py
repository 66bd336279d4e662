"""Time one workload on every side, alternated, and summarise it as one row.

A **side** is one way of running a workload: ``raw`` (plain ``client.get`` on the standalone
cluster), ``raw_tls`` (the same on its twin that talks TLS), ``raw_same`` (plain ``client.get``
on the dispatcher's own scheduler), ``ours`` (``ct.dispatch`` + ``ct.get_result(wait=True)``)
and, when asked, ``peer`` (a real Covalent).
Each repetition runs every side once, in that order, so drift on this noisy machine hits all
of them alike. Raw graphs are built anew per repetition with fresh keys, outside the timing.

Each timed run starts after ``os.sync()``, so disk writes a previous side left buffered (ours
stores outputs as files) are not charged to the next. Besides wall time, each run records the
CPU seconds of this client, of the processes hosting the side's scheduler (the dispatcher and
its scheduler process for ``ours`` and ``raw_same``) and of its Dask worker processes, from /proc.
"""

from __future__ import annotations

import math
import os
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import distributed

import covalent as ct

from dispatcher.procinfo import cpu_seconds
from .workloads import Workload

RAW_TIMEOUT_S = 900  # a raw graph that hangs becomes an error instead of a stuck run


@dataclass(frozen=True)
class Side:
    """How to run a workload on one side, and which processes do the work there."""

    name: str
    run: Callable[[Workload], Any]  # returns the workload's result
    server_pids: tuple[int, ...]  # the server and scheduler processes
    worker_pids: tuple[int, ...]
    max_nodes: int | None = None  # larger workloads are not run on this side

    def takes(self, w: Workload) -> bool:
        return self.max_nodes is None or w.nodes <= self.max_nodes

    def _cpu(self) -> tuple[float, float, float, float]:
        server = sum(cpu_seconds(p) for p in self.server_pids)
        workers = sum(cpu_seconds(w) for w in self.worker_pids)
        return time.perf_counter(), time.process_time(), server, workers

    def timed(self, w: Workload) -> tuple[Any, tuple[float, ...]]:
        """Run once: (result, (wall, client CPU, server CPU, workers CPU))."""
        os.sync()  # the previous side's buffered disk writes are flushed now, not on our clock
        before = self._cpu()
        value = self.run(w)
        after = self._cpu()
        return value, tuple(b - a for a, b in zip(before, after, strict=True))


def raw_runner(client: distributed.Client) -> Callable[[Workload], Any]:
    """Run a workload's plain Dask graph, built now with fresh keys, with ``client``."""
    def run(w: Workload) -> Any:
        dsk, key = w.raw(uuid.uuid4().hex)
        future = client.get(dsk, key, sync=False)
        try:
            return future.result(timeout=RAW_TIMEOUT_S)
        finally:
            future.release()
    return run


def ours_runner(addr: str) -> Callable[[Workload], Any]:
    """Dispatch a workload and wait for its result with the public SDK."""
    def run(w: Workload) -> Any:
        dispatch_id = ct.dispatch(w.lattice, dispatcher_addr=addr)(*w.args)
        result = ct.get_result(dispatch_id, wait=True, dispatcher_addr=addr)
        assert isinstance(result, ct.Result)  # not status_only
        if result.status != "COMPLETED":
            raise RuntimeError(f"{w.name}: dispatch {dispatch_id} ended {result.status}: "
                               f"{result.error}")
        return result.result
    return run


def same(a: Any, b: Any) -> bool:
    """Equal results, arrays up to float rounding."""
    if hasattr(a, "shape") or hasattr(b, "shape"):
        import numpy as np

        return bool(np.allclose(a, b))
    return bool(a == b)


def bench(w: Workload, sides: list[Side], timed: set[str], repeats: int) -> dict[str, Any]:
    """Alternate the ``timed`` sides ``repeats`` times; run the others once, untimed, so every
    side's result is checked against the first side's."""
    skipped = [s.name for s in sides if not s.takes(w)]
    sides = [s for s in sides if s.takes(w)]
    samples: dict[str, list[tuple[float, ...]]] = {s.name: [] for s in sides if s.name in timed}
    results: dict[str, Any] = {}
    for _ in range(repeats):
        for s in sides:
            if s.name in timed:
                results[s.name], sample = s.timed(w)
                samples[s.name].append(sample)
    for s in sides:
        if s.name not in results:
            results[s.name] = s.run(w)
    first = sides[0].name
    for name, value in results.items():
        if not same(value, results[first]):
            raise SystemExit(f"{w.name}: {name} returned {value!r}, {first} {results[first]!r}")
    row: dict[str, Any] = {"workload": w.name, "nodes": w.nodes, "repeats": repeats,
                           "same_result": sorted(results), "skipped": skipped}
    for name, ms in samples.items():
        row.update(_side_columns(name, ms))
    row.update(_ratios(row))
    build = time.perf_counter()
    w.lattice.build_graph(*w.args)
    row["client_build_s"] = time.perf_counter() - build
    return row


def _side_columns(name: str, ms: list[tuple[float, ...]]) -> dict[str, Any]:
    walls = [m[0] for m in ms]
    cols: dict[str, Any] = {f"{name}_median_s": statistics.median(walls),
                            f"{name}_p90_s": percentile(walls, 0.9), f"{name}_samples_s": walls}
    for i, part in enumerate(("client", "server", "workers"), start=1):
        cols[f"{name}_cpu_{part}_s"] = statistics.median(m[i] for m in ms)
    return cols


def _ratios(row: dict[str, Any]) -> dict[str, float]:
    """ours/raw (the main ratio), ours/raw_same, raw_tls/raw, peer/raw, and the differences
    in ms."""
    out: dict[str, float] = {}
    for top, bottom, key in (("ours", "raw", ""), ("ours", "raw_same", "_same"),
                             ("raw_tls", "raw", "_tls"), ("peer", "raw", "_peer")):
        a, b = row.get(f"{top}_median_s"), row.get(f"{bottom}_median_s")
        if a is not None and b:
            out[f"ratio{key}"] = a / b
            out[f"overhead{key}_ms"] = (a - b) * 1000
    return out


def percentile(xs: list[float], q: float) -> float:
    """Nearest-rank percentile.

    >>> percentile([float(i) for i in range(1, 101)], 0.99), percentile([3.0, 1.0, 2.0], 0.5)
    (99.0, 2.0)
    """
    s = sorted(xs)
    return s[max(0, math.ceil(round(q * len(s), 9)) - 1)]
