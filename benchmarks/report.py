"""Print the benchmark rows: a progress line per workload, then markdown tables.

Human output goes to stderr, the JSON lines (one per workload) to stdout, so
``python -m benchmarks > rows.jsonl`` keeps the tables on the terminal.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

SIDES = ("raw", "raw_tls", "raw_same", "ours", "peer")


def _ms(r: dict[str, Any], key: str) -> str:
    v = r.get(key)
    return "-" if v is None or math.isnan(v) else f"{v * 1000:.1f}"


def _num(r: dict[str, Any], key: str, fmt: str = ".2f") -> str:
    v = r.get(key)
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def progress(r: dict[str, Any]) -> None:
    """One line as soon as a workload is done."""
    if "dispatches" in r:
        text = (f"ours {_num(r, 'ours_throughput_per_s', '.1f')}/s "
                f"raw {_num(r, 'raw_throughput_per_s', '.1f')}/s "
                f"ratio {_num(r, 'throughput_ratio')}")
    elif "first_task" in r:
        text = (f"first task: raw {_ms(r, 'raw_first_s')} ms  ours {_ms(r, 'ours_first_s')} ms"
                f"  ours/raw {_num(r, 'first_ratio')}")
    else:
        text = "  ".join(f"{s} {_ms(r, f'{s}_median_s')} ms" for s in SIDES
                         if f"{s}_median_s" in r) + f"  ours/raw {_num(r, 'ratio')}"
    print(f"{r['workload']:>18}  {text}", file=sys.stderr, flush=True)


def _table(header: list[str], lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    out += ["| " + " | ".join(cells) + " |" for cells in lines]
    return "\n".join(out)


def timing_table(rows: list[dict[str, Any]]) -> str:
    peer = any("peer_median_s" in r for r in rows)
    header = ["workload", "nodes", "raw ms", "raw TLS ms", "raw same-sched ms", "ours ms",
              "ours/raw", "raw TLS/raw", "ours/raw same-sched", "ours - raw ms", "client build ms",
              "server peak MiB"]
    header += ["peer ms", "peer/raw"] if peer else []
    lines = []
    for r in rows:
        cells = [r["workload"], str(r["nodes"]), _ms(r, "raw_median_s"), _ms(r, "raw_tls_median_s"),
                 _ms(r, "raw_same_median_s"), _ms(r, "ours_median_s"), _num(r, "ratio"),
                 _num(r, "ratio_tls"), _num(r, "ratio_same"), _num(r, "overhead_ms", "+.1f"),
                 _ms(r, "client_build_s"), _num(r, "server_peak_rss_mib", ".0f")]
        cells += [_ms(r, "peer_median_s"), _num(r, "ratio_peer")] if peer else []
        lines.append(cells)
    return _table(header, lines)


def cpu_table(rows: list[dict[str, Any]]) -> str:
    sides = [s for s in SIDES if any(f"{s}_cpu_client_s" in r for r in rows)]
    lines = [[r["workload"]] + ["/".join(_num(r, f"{s}_cpu_{p}_s")
                                          for p in ("client", "server", "workers")) for s in sides]
             for r in rows]
    return _table(["workload"] + [f"CPU s {s} (client/server/workers)" for s in sides], lines)


def floor_table(rows: list[dict[str, Any]]) -> str:
    header = ["workload", "output MB", "raw ms", "disk write+read ms", "raw + disk ms", "ours ms",
              "ours/(raw + disk)"]
    lines = [[r["workload"], f"{r['output_bytes'] / 1e6:.0f}",
              _ms(r, "raw_median_s"), _ms(r, "disk_floor_s"),
              f"{(r.get('raw_median_s', math.nan) + r['disk_floor_s']) * 1000:.1f}",
              _ms(r, "ours_median_s"), _num(r, "ratio_floor")] for r in rows]
    return _table(header, lines)


def first_task_table(rows: list[dict[str, Any]]) -> str:
    header = ["workload", "nodes", "raw: submit returned / first task ms",
              "ours: dispatch returned / first task ms", "ours: request sent to first task ms",
              "ours/raw (first task)", "ours/raw (from request sent)"]
    lines = [[r["workload"], str(r["nodes"]),
              f"{_ms(r, 'raw_returned_s')} / {_ms(r, 'raw_first_s')}",
              f"{_ms(r, 'ours_returned_s')} / {_ms(r, 'ours_first_s')}",
              _ms(r, "ours_sent_first_s"), _num(r, "first_ratio"),
              _num(r, "sent_first_ratio")] for r in rows]
    return _table(header, lines)


def memory_table(rows: list[dict[str, Any]]) -> str:
    header = ["workload", "dispatcher peak RSS MiB", "ours client above baseline MiB",
              "raw client above baseline MiB", "standalone scheduler peak RSS MiB"]
    lines = [[r["workload"], _num(r, "server_peak_rss_mib", ".0f"),
              _num(r, "ours_client_above_baseline_mib", ".0f"),
              _num(r, "raw_client_above_baseline_mib", ".0f"),
              _num(r, "raw_server_peak_rss_mib", ".0f")] for r in rows]
    return _table(header, lines)


def concurrency_table(rows: list[dict[str, Any]]) -> str:
    header = ["workload", "raw /s", "ours /s", "ours/raw throughput", "raw p50 / p99 ms",
              "ours p50 / p99 ms", "completed raw, ours"]
    lines = [[r["workload"], _num(r, "raw_throughput_per_s", ".1f"),
              _num(r, "ours_throughput_per_s", ".1f"), _num(r, "throughput_ratio"),
              f"{_ms(r, 'raw_p50_s')} / {_ms(r, 'raw_p99_s')}",
              f"{_ms(r, 'ours_p50_s')} / {_ms(r, 'ours_p99_s')}",
              f"{r.get('raw_completed', '-')}/{r['dispatches']}, "
              f"{r.get('ours_completed', '-')}/{r['dispatches']}"] for r in rows]
    return _table(header, lines)


def tables(rows: list[dict[str, Any]]) -> str:
    timed = [r for r in rows if "dispatches" not in r and "first_task" not in r]
    parts = []
    if timed:
        parts += [timing_table(timed), cpu_table(timed)]
    if floors := [r for r in timed if "disk_floor_s" in r]:
        parts.append(floor_table(floors))
    if memory := [r for r in timed if "ours_client_above_baseline_mib" in r]:
        parts.append(memory_table(memory))
    if conc := [r for r in rows if "dispatches" in r]:
        parts.append(concurrency_table(conc))
    if firsts := [r for r in rows if "first_task" in r]:
        parts.append(first_task_table(firsts))
    return "\n\n".join(parts)


def print_all(rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    print("\n" + tables(rows) + "\n", file=sys.stderr)
    for r in rows:
        print(json.dumps({**r, **meta}))
