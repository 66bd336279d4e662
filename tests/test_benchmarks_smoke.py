"""The benchmark runs end to end (``--quick``) so it never rots; no timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.processes
def test_quick_benchmark_reports_every_workload(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--repeats", "1",
                           "--json", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    names = [r["workload"] for r in rows]
    assert names[:3] == ["two-node", "chain-20", "fan-out-50"]
    for r in rows[:-1]:
        assert r["raw_median_s"] > 0 and r["ours_median_s"] > 0 and r["ratio"] > 0
    assert rows[-1]["completed"] == rows[-1]["dispatches"] == 10
