"""Run the benchmarks side by side with raw Dask on the same cluster.

    python -m benchmarks [--quick] [--json FILE] [--repeats N]

Starts a dispatcher (embedded LocalCluster, 2 workers x 1 thread) in a subprocess on a free
port with a temporary data dir, connects a plain Dask client to the same scheduler, warms
both up, then for each workload alternates raw Dask (``client.get`` of the same graph of the
same functions) and ours (``ct.dispatch`` + ``ct.get_result(wait=True)``, timed in the
client). Prints a table and one JSON line per workload with medians, p90 and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dask
import distributed

import covalent as ct

from .procfs import children, cpu_seconds, peak_rss_mib
from .workloads import Workload, all_workloads, small_workflow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _status(url: str) -> dict[str, Any] | None:
    req = urllib.request.Request(url + "/api/v1/status",
                                 headers={"Authorization": f"Bearer {os.environ['COVALENT_TOKEN']}"})
    try:
        with urllib.request.urlopen(req, timeout=2) as r:
            return dict(json.loads(r.read()))
    except OSError:
        return None


class Meter:
    """Wall time, and CPU seconds of this client, the server process (dispatcher and Dask
    scheduler share it) and the worker processes, over one call."""

    def __init__(self, server_pid: int) -> None:
        self.server = server_pid
        self.workers = [c for c in children(server_pid) if c != server_pid]

    def snapshot(self) -> tuple[float, float, float, float]:
        return (time.perf_counter(), time.process_time(), cpu_seconds(self.server),
                sum(cpu_seconds(w) for w in self.workers))

    def run(self, fn: Any) -> tuple[float, float, float, float]:
        before = self.snapshot()
        fn()
        after = self.snapshot()
        wall, client, server, workers = (b - a for a, b in zip(before, after, strict=True))
        return wall, client, server, workers


def _ours(w: Workload, addr: str) -> Any:
    dispatch_id = ct.dispatch(w.lattice, dispatcher_addr=addr)(*w.args)
    result = ct.get_result(dispatch_id, wait=True, dispatcher_addr=addr)
    assert result.status == "COMPLETED", result.error
    return result


def _same(a: Any, b: Any) -> bool:
    if hasattr(a, "shape"):
        import numpy as np

        return bool(np.allclose(a, b))
    return bool(a == b)


def bench(w: Workload, addr: str, client: distributed.Client, meter: Meter,
          repeats: int, side: str = "both") -> dict[str, Any]:
    raw_m: list[tuple[float, ...]] = []
    ours_m: list[tuple[float, ...]] = []
    out: dict[str, Any] = {}
    dsk, key = w.raw()
    for _ in range(repeats):
        if side != "ours":
            raw_m.append(meter.run(lambda: out.__setitem__("raw", client.get(dsk, key))))
        if side != "raw":
            ours_m.append(meter.run(lambda: out.__setitem__("ours", _ours(w, addr))))
    if side != "both":  # profiling one side: run the other once, untimed, for the check
        out.setdefault("raw", client.get(dsk, key))
        out.setdefault("ours", _ours(w, addr))
        raw_m, ours_m = raw_m or ours_m, ours_m or raw_m
    if not _same(out["ours"].result, out["raw"]):
        raise SystemExit(f"{w.name}: ours returned {out['ours'].result!r}, raw {out['raw']!r}")
    build_t = meter.run(lambda: w.lattice.build_graph(*w.args))[0]
    raw_t, ours_t = [m[0] for m in raw_m], [m[0] for m in ours_m]
    raw_med, ours_med = statistics.median(raw_t), statistics.median(ours_t)
    row: dict[str, Any] = {
        "workload": w.name, "nodes": w.nodes, "repeats": repeats,
        "raw_median_s": raw_med, "ours_median_s": ours_med,
        "raw_p90_s": _p90(raw_t), "ours_p90_s": _p90(ours_t),
        "ratio": ours_med / raw_med if raw_med else float("nan"),
        "overhead_ms": (ours_med - raw_med) * 1000, "client_build_s": build_t}
    for side, ms in (("raw", raw_m), ("ours", ours_m)):
        for i, part in enumerate(("client", "server", "workers"), start=1):
            row[f"{side}_cpu_{part}_s"] = statistics.median(m[i] for m in ms)
    return row


def _p90(xs: list[float]) -> float:
    return sorted(xs)[min(len(xs) - 1, int(0.9 * len(xs)))]


def concurrent(addr: str, n: int, threads: int) -> dict[str, Any]:
    w = small_workflow()

    def one(_: int) -> float:
        t = time.perf_counter()
        r = _ours(w, addr)
        assert r.result == 36 + 9
        return time.perf_counter() - t

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        lat = sorted(pool.map(one, range(n)))
    wall = time.perf_counter() - t0
    return {"workload": f"concurrent-{n}x10", "dispatches": n, "completed": len(lat),
            "throughput_per_s": n / wall, "p50_s": lat[len(lat) // 2],
            "p99_s": lat[min(len(lat) - 1, int(0.99 * len(lat)))]}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks")
    p.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    p.add_argument("--json", default=None, help="also write all rows to this file")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--only", default="", help="comma-separated workload names (prefixes)")
    p.add_argument("--side", default="both", choices=("both", "raw", "ours"),
                   help="time one side only (to profile it); ratios are then meaningless")
    ns = p.parse_args(argv)
    repeats = ns.repeats or (2 if ns.quick else 5)
    port = _free_port()
    data = tempfile.mkdtemp(prefix="covalent-bench-")
    os.environ["COVALENT_TOKEN"] = secrets.token_urlsafe(24)  # the SDK sends it too
    env = dict(os.environ, COVALENT_DATA_DIR=data)
    server = subprocess.Popen(
        [sys.executable, "-m", "dispatcher", "--port", str(port), "--workers", "2",
         "--threads-per-worker", "1", "--dashboard-address", ":0"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows: list[dict[str, Any]] = []
    try:
        url, addr = f"http://127.0.0.1:{port}", f"127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while (info := _status(url)) is None or info["cluster"].get("workers") != 2:
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the dispatcher did not start")
            time.sleep(0.1)  # waiting for another process to come up
        tls = Path(data) / "tls"  # the embedded scheduler talks TLS; its user has the keys
        security = distributed.Security(
            tls_ca_file=str(tls / "ca.pem"), tls_client_cert=str(tls / "cert.pem"),
            tls_client_key=str(tls / "key.pem"), require_encryption=True)
        client = distributed.Client(info["cluster"]["scheduler"], set_as_default=False,
                                    security=security)
        meter = Meter(server.pid)
        try:
            warm = all_workloads(quick=True)[0]
            for _ in range(3):
                _ours(warm, addr)
                client.get(*warm.raw())
            only = [o for o in ns.only.split(",") if o]
            for w in all_workloads(ns.quick):
                if only and not any(w.name == o or w.name.startswith(o + "-") for o in only):
                    continue
                rows.append(bench(w, addr, client, meter, repeats, ns.side))
                rows[-1]["server_peak_rss_mib"] = peak_rss_mib(server.pid)
                _print(rows[-1])
            if not only or any("concurrent".startswith(o) for o in only):
                rows.append(concurrent(addr, 10 if ns.quick else 50, 10))
                rows[-1]["server_peak_rss_mib"] = peak_rss_mib(server.pid)
                _print(rows[-1])
        finally:
            client.close()
    finally:
        server.terminate()
        server.wait(30)
    meta = {"cores": os.cpu_count(), "python": platform.python_version(),
            "dask": dask.__version__, "distributed": distributed.__version__}
    for r in rows:
        print(json.dumps({**r, **meta}))
    if ns.json:
        Path(ns.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


def _print(r: dict[str, Any]) -> None:
    if "ratio" in r:
        print(f"{r['workload']:>16}  raw {r['raw_median_s'] * 1000:9.1f} ms  ours "
              f"{r['ours_median_s'] * 1000:9.1f} ms  ratio {r['ratio']:5.2f}  "
              f"build {r['client_build_s'] * 1000:7.1f} ms  server peak {r['server_peak_rss_mib']:6.0f} MiB",
              file=sys.stderr)
        print(" " * 18 + "cpu s client/server/workers: raw "
              + "/".join(f"{r[f'raw_cpu_{p}_s']:.2f}" for p in ("client", "server", "workers"))
              + "  ours " + "/".join(f"{r[f'ours_cpu_{p}_s']:.2f}" for p in ("client", "server", "workers")),
              file=sys.stderr)
    else:
        print(f"{r['workload']:>16}  {r['throughput_per_s']:.1f} dispatches/s  p50 "
              f"{r['p50_s'] * 1000:.0f} ms  p99 {r['p99_s'] * 1000:.0f} ms", file=sys.stderr)


if __name__ == "__main__":
    main()
