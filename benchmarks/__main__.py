"""Run the benchmarks: ours against raw Dask on a standalone cluster of the same shape.

    python -m benchmarks [--quick] [--repeats N] [--json FILE] [--only NAME[,NAME]]
                         [--side both|raw|ours] [--peer-covalent PYTHON] [--db-url URL]
                         [--load N]

Starts our dispatcher (``server.py``: embedded LocalCluster of 2 workers x 1 thread, explicit
token) and, in processes of their own, a standalone LocalCluster of the same shape and the same
talking TLS (``standalone.py``), warms every side up, then for each workload alternates raw
Dask on the standalone cluster, on its TLS twin, on the dispatcher's own scheduler, and ours
(``measure.py``). Workloads that move big arrays also measure the clients' peak memory
(``memory.py``) and the disk's floor for their outputs (``floor.py``); the concurrency row
compares throughput and latency (``concurrency.py``), the first-task row how long a large
fan-out takes to start (``first_task.py``). ``--load N`` runs N CPU-bound processes beside it
all (``load.py``). Prints markdown tables on stderr and one JSON line per workload on stdout
(``report.py``). Nothing here asserts a timing: this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
from contextlib import ExitStack
from importlib.metadata import version
from pathlib import Path
from typing import Any

import covalent as ct

from . import report
from .concurrency import concurrent
from .first_task import first_task, ours_first, raw_first
from .floor import write_read_s
from .load import busy
from .measure import Side, bench, ours_runner, raw_runner
from .memory import measure as measure_memory
from .peer import running_peer
from dispatcher.procinfo import peak_rss_mib, reset_peak_rss
from dispatcher.store import redact
from .server import Dispatcher, running_dispatcher, scheduler_client
from .standalone import Standalone, standalone_cluster
from .workloads import STAMP_ENV, Workload, all_workloads, fan_out, two_node


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    p.add_argument("--json", default=None, help="also write all rows to this file")
    p.add_argument("--repeats", type=int, default=None, help="default 5, 2 with --quick")
    p.add_argument("--only", default="", help="comma-separated workload names or prefixes "
                   "(e.g. two-node,fan-out,concurrent)")
    p.add_argument("--side", default="both", choices=("both", "raw", "ours"),
                   help="time one side only (to profile it); ratios are then absent")
    p.add_argument("--peer-covalent", default=None, metavar="PYTHON",
                   help="also run the workloads on a real Covalent installed for this python")
    p.add_argument("--db-url", default="", metavar="URL",
                   help="the dispatcher's database, e.g. postgresql://user@host/db (an empty "
                        "database of its own: the benchmark fills it); default its SQLite file")
    p.add_argument("--peer-max-nodes", type=int, default=100, metavar="N",
                   help="skip workloads over N nodes on the peer (default 100)")
    p.add_argument("--load", type=int, default=0, metavar="N",
                   help="run N CPU-bound processes beside the benchmark (a loaded machine)")
    return p.parse_args(argv)


def wanted(name: str, only: list[str]) -> bool:
    """``--only`` matches a whole name or the part before a size (``fan-out`` for fan-out-50)."""
    return not only or any(name == o or name.startswith(o + "-") for o in only)


def memory_columns(w: Workload, d: Dispatcher, sa: Standalone) -> dict[str, Any]:
    """Each client's peak memory above its baseline, each in a fresh process."""
    dispatch_id = ct.dispatch(w.lattice, dispatcher_addr=d.addr)(*w.args)
    ours = measure_memory("ours", d.addr, dispatch_id)
    raw = measure_memory("raw", sa.address, *(str(a) for a in w.args))
    return {"ours_client_above_baseline_mib": ours["above_baseline_mib"],
            "raw_client_above_baseline_mib": raw["above_baseline_mib"],
            "ours_client_memory": ours, "raw_client_memory": raw}


def floor_columns(w: Workload, d: Dispatcher, row: dict[str, Any], repeats: int) -> dict[str, Any]:
    """The disk's floor for the workload's outputs, next to what ours took."""
    floor = statistics.median(write_read_s(list(w.output_bytes), d.data_dir / "floor")
                              for _ in range(repeats))
    out: dict[str, Any] = {"disk_floor_s": floor, "output_bytes": sum(w.output_bytes)}
    if "ours_median_s" in row and "raw_median_s" in row:
        out["ratio_floor"] = row["ours_median_s"] / (row["raw_median_s"] + floor)
    return out


def run_workloads(workloads: list[Workload], sides: list[Side], timed: set[str], repeats: int,
                  d: Dispatcher, sa: Standalone) -> list[dict[str, Any]]:
    rows = []
    for w in workloads:
        reset_peak_rss(d.pid)
        reset_peak_rss(sa.pid)
        row = bench(w, sides, timed, repeats)
        if w.output_bytes:
            row.update(floor_columns(w, d, row, repeats))
        if w.measure_memory:
            row.update(memory_columns(w, d, sa))
        row["server_peak_rss_mib"] = peak_rss_mib(d.pid)
        row["raw_server_peak_rss_mib"] = peak_rss_mib(sa.pid)
        report.progress(row)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    ns = parse_args(argv)
    repeats = ns.repeats or (2 if ns.quick else 5)
    only = [o for o in ns.only.split(",") if o]
    workloads = [w for w in all_workloads(ns.quick) if wanted(w.name, only)]
    rows: list[dict[str, Any]] = []
    with ExitStack() as stack:
        stamps = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-stamp-")))
        os.environ[STAMP_ENV] = str(stamps / "first")  # the clusters' workers inherit it
        stack.enter_context(busy(ns.load))
        d = stack.enter_context(running_dispatcher(db_url=ns.db_url))
        sa, raw_client = stack.enter_context(standalone_cluster())
        sa_tls, tls_client = stack.enter_context(standalone_cluster(tls=True))
        same_client = stack.enter_context(scheduler_client(d.scheduler_address(), d.data_dir))
        sides = [Side("raw", raw_runner(raw_client), (sa.pid,), sa.worker_pids),
                 Side("raw_tls", raw_runner(tls_client), (sa_tls.pid,), sa_tls.worker_pids),
                 Side("raw_same", raw_runner(same_client), d.server_pids, d.worker_pids),
                 Side("ours", ours_runner(d.addr), d.server_pids, d.worker_pids)]
        if ns.peer_covalent:
            sides.append(stack.enter_context(
                running_peer(ns.peer_covalent, ns.quick, ns.peer_max_nodes)))
        timed = {"both": {s.name for s in sides}, "raw": {"raw", "raw_tls", "raw_same"},
                 "ours": {"ours"}}[ns.side]
        for s in sides:
            for _ in range(3):
                s.run(two_node())
        rows += run_workloads(workloads, sides, timed, repeats, d, sa)
        if wanted("concurrent", only):
            runs = {"raw": sides[0].run, "ours": sides[3].run}
            rows.append(concurrent({k: v for k, v in runs.items() if k in timed},
                                   10 if ns.quick else 50, 10, 1 if ns.quick else repeats))
            report.progress(rows[-1])
        if wanted("first-task", only):
            firsts = {"raw": raw_first(raw_client, stamps / "first"),
                      "ours": ours_first(d.addr, same_client, stamps / "first")}
            rows.append(first_task(fan_out(2000 if ns.quick else 100_000, stamped=True),
                                   {k: v for k, v in firsts.items() if k in timed},
                                   1 if ns.quick else repeats))
            report.progress(rows[-1])
    meta = {"cores": os.cpu_count(), "python": platform.python_version(),
            **{m: version(m) for m in ("dask", "distributed", "numpy")}, "quick": ns.quick,
            "load": ns.load, "database": redact(ns.db_url) if ns.db_url else "sqlite"}
    report.print_all(rows, meta)
    if ns.json:
        Path(ns.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
