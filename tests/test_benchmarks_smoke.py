"""The benchmark runs end to end (``--quick``) so it never rots; no timing is asserted.

Also: the raw client reaches a TLS scheduler with the credentials the dispatcher will write to
``<data_dir>/tls`` (``benchmarks.server.scheduler_client``), so the same-scheduler column
survives the dispatcher's move to TLS.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import distributed
import pytest

from benchmarks.server import scheduler_client

REPO = Path(__file__).resolve().parents[1]
QUICK = ["two-node", "chain-20", "fan-out-50", "square-8x8", "primes-8", "matmul-128",
         "arrays-4x8MB"]


@pytest.mark.slow
@pytest.mark.processes
def test_quick_benchmark_reports_every_workload(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--repeats", "1",
                           "--json", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert len(proc.stdout.splitlines()) == len(rows)  # one JSON line per workload
    first = rows.pop()
    assert first["workload"] == "first-task-2000" and first["first_ratio"] > 0
    assert 0 < first["raw_first_s"] and 0 < first["ours_returned_s"] < first["ours_first_s"]
    assert [r["workload"] for r in rows] == [*QUICK, "concurrent-10x10"]
    for r in rows[:-1]:
        assert r["same_result"] == ["ours", "raw", "raw_same", "raw_tls"]  # all returned the same
        for side in ("raw", "raw_tls", "raw_same", "ours"):
            assert r[f"{side}_median_s"] > 0
            assert r[f"{side}_cpu_workers_s"] >= 0 and r[f"{side}_cpu_server_s"] >= 0
        assert r["ratio"] > 0 and r["ratio_same"] > 0 and r["ratio_tls"] > 0
        assert r["server_peak_rss_mib"] > 0
    arrays = rows[-2]
    assert arrays["disk_floor_s"] > 0 and arrays["output_bytes"] == 4 * 8_000_000
    assert arrays["ratio_floor"] > 0
    for side in ("ours", "raw"):
        child = arrays[f"{side}_client_memory"]
        assert child["result"] == 4 * 1_000_000 * 2.5  # 1 + 2 + 3 + 4 per element
        assert math.isfinite(child["above_baseline_mib"]) and child["peak_reset"]
    conc = rows[-1]
    assert conc["ours_completed"] == conc["raw_completed"] == conc["dispatches"] == 10
    assert conc["ours_errors"] == conc["raw_errors"] == []
    assert conc["ours_throughput_per_s"] > 0 and conc["raw_throughput_per_s"] > 0


def _tls_credentials(tls: Path) -> None:
    """A throwaway CA and one certificate it signed, as the dispatcher will write them."""
    tls.mkdir(parents=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for cmd in (["req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
                 "-subj", "/CN=bench-test-ca"],
                ["req", *ec, "-keyout", "key.pem", "-out", "req.csr", "-subj", "/CN=dask"],
                ["x509", "-req", "-in", "req.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", "cert.pem", "-days", "1"]):
        subprocess.run(["openssl", *cmd], cwd=tls, check=True, capture_output=True)


def test_scheduler_client_uses_the_dispatchers_tls_credentials(tmp_path: Path) -> None:
    _tls_credentials(tmp_path / "tls")
    tls = tmp_path / "tls"
    cert, key = str(tls / "cert.pem"), str(tls / "key.pem")
    security = distributed.Security(  # the cluster object itself talks to its scheduler too
        tls_ca_file=str(tls / "ca.pem"), tls_scheduler_cert=cert, tls_scheduler_key=key,
        tls_client_cert=cert, tls_client_key=key, require_encryption=True)
    with distributed.LocalCluster(n_workers=0, processes=False, protocol="tls://",
                                  host="127.0.0.1", security=security,
                                  dashboard_address=None,
                                  scheduler_kwargs={"dashboard": False,
                                                    "dashboard_address": "127.0.0.1:0"}) as cluster:
        assert cluster.scheduler_address.startswith("tls://")
        with scheduler_client(cluster.scheduler_address, tmp_path) as client:
            assert client.scheduler_info()["address"] == cluster.scheduler_address


@pytest.mark.slow
def test_ui_render_benchmark_runs_quick() -> None:
    if not Path(shutil.which("chromium") or "/usr/bin/chromium").exists():
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.ui_render", "--quick"], cwd=REPO,
                          capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = json.loads(proc.stdout.splitlines()[-1])
    assert row["benchmark"] == "ui_render" and row["first_render_ms"]["median"] > 0
    assert row["box_open_ms"]["median"] > 0 and row["frame_ms"]["median"] > 0
