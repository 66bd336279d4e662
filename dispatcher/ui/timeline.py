"""A dispatch over time (issue #24): each electron a bar from its start to its end, in lanes by
the worker that ran it, with the critical path marked, and statistics: the slowest electrons,
time per electron name, and time queued (ready but not started) against time running.

Pure functions of the node rows and the graph's edges (``timeline``), plus the two routes the
dispatch page's Timeline tab reads: the bars as JSON, the statistics as an HTML fragment.

- **ready** time of a node: the latest end among its parents (gathering and parameter nodes
  included: a list is ready when its last part is), or the dispatch's start; **queued** is
  start minus ready.
- **lanes**: one group per worker (nodes whose worker was not recorded, and reused outputs
  that did not run, get a group of their own); inside a group, overlapping bars (a worker's
  threads) go to the first free row, so bars never overlap.
- **critical path**: from the electron that ended last, back through the parent that ended
  last, to the start: the chain that decided the dispatch's runtime.
"""

from __future__ import annotations

import re

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from covalent.layout import display_name

from ..keys import STORE
from ..state import Status
from ..store import NodeRow
from ..store.base import USER_KINDS
from . import live
from .keys import GRAPHS
from .routes import dispatch_id_of, get_dispatch
from .views import duration, parse_time

routes = web.RouteTableDef()
SLOWEST = 10
NOT_RECORDED = "worker not recorded"
_SOCKET = re.compile(r"unix://.*/(\d+)-[0-9a-f]+\.sock")


def worker_label(address: str) -> str:
    """A worker as a lane is labelled: its ``host:port``, or the process of one of the
    embedded cluster's Unix sockets (named after its pid; the paths differ only at their end).

    >>> worker_label("unix:///tmp/run/sockets-1a2b3c4d/24902-2f42d297.sock")
    'worker pid 24902'
    >>> worker_label("tls://10.0.0.2:40123")
    '10.0.0.2:40123'
    """
    found = _SOCKET.fullmatch(address)
    if found:
        return f"worker pid {found.group(1)}"
    return address.split("://", 1)[-1]
REUSED = "reused (did not run)"


@dataclass(slots=True)
class Bar:
    node_id: int
    name: str
    status: Status
    start: float  # seconds after the dispatch started
    end: float
    queued: float
    group: str = ""
    row: int = 0
    critical: bool = False


@dataclass(slots=True)
class PerName:
    name: str
    count: int = 0
    run: float = 0.0
    queued: float = 0.0
    longest: float = 0.0

    @property
    def mean(self) -> float:
        return self.run / self.count if self.count else 0.0


@dataclass(slots=True)
class Timeline:
    span: float  # seconds from the dispatch's start to its end (or now)
    bars: list[Bar]
    lanes: list[tuple[str, int]]  # (group, row) in drawing order
    critical: list[int] = field(default_factory=list)  # node ids, first to last
    per_name: list[PerName] = field(default_factory=list)

    @property
    def run_total(self) -> float:
        return sum(b.end - b.start for b in self.bars)

    @property
    def queued_total(self) -> float:
        return sum(b.queued for b in self.bars)

    @property
    def critical_s(self) -> float:
        return sum(b.end - b.start for b in self.bars if b.critical)


def _offset(t0: datetime, iso: str | None, fallback: float) -> float:
    t = parse_time(iso)
    return max((t - t0).total_seconds(), 0.0) if t is not None else fallback


def timeline(rows: list[NodeRow], edges: list[list[Any]], start: str | None, end: str | None,
             now: datetime, reused: set[int] | None = None) -> Timeline:
    """The bars, lanes, critical path and statistics of a dispatch (see the module doc)."""
    t0 = parse_time(start) or now
    span = _offset(t0, end, (now - t0).total_seconds())
    parents: dict[int, list[int]] = defaultdict(list)
    for e in edges:
        parents[int(e[1])].append(int(e[0]))
    ends = {r.node_id: _offset(t0, r.end_time, span) for r in rows if r.start_time or r.end_time}
    bars: list[Bar] = []
    for r in rows:
        if r.kind not in USER_KINDS or not r.start_time:
            continue
        began = _offset(t0, r.start_time, 0.0)
        ended = ends.get(r.node_id, span) if r.end_time else span  # running: until now
        ready = max((ends.get(p, 0.0) for p in parents[r.node_id]), default=0.0)
        bar = Bar(r.node_id, display_name(r.name), r.status, began, max(ended, began),
                  max(began - ready, 0.0))
        bar.group = (REUSED if reused and r.node_id in reused
                     else worker_label(r.worker) if r.worker else NOT_RECORDED)
        bars.append(bar)
    lanes = _pack(bars)
    out = Timeline(span, bars, lanes)
    out.critical = _critical(bars, parents, ends)
    by_name: dict[str, PerName] = {}
    for b in bars:
        p = by_name.setdefault(b.name, PerName(b.name))
        p.count += 1
        p.run += b.end - b.start
        p.queued += b.queued
        p.longest = max(p.longest, b.end - b.start)
    out.per_name = sorted(by_name.values(), key=lambda p: -p.run)
    return out


def _pack(bars: list[Bar]) -> list[tuple[str, int]]:
    """Give each bar a row in its group, the first whose last bar ended before it starts.

    >>> bars = [Bar(0, "a", Status.COMPLETED, 0, 2, 0, "w1"), Bar(1, "a", Status.COMPLETED, 1, 3, 0, "w1"),
    ...         Bar(2, "a", Status.COMPLETED, 2.5, 4, 0, "w1")]
    >>> _pack(bars), [b.row for b in bars]
    ([('w1', 0), ('w1', 1)], [0, 1, 0])
    """
    free_at: dict[str, list[float]] = defaultdict(list)
    for b in sorted(bars, key=lambda b: (b.start, b.end, b.node_id)):
        rows = free_at[b.group]
        for i, t in enumerate(rows):
            if t <= b.start:
                b.row, rows[i] = i, b.end
                break
        else:
            b.row = len(rows)
            rows.append(b.end)
    order = sorted(free_at, key=lambda g: (g in (NOT_RECORDED, REUSED), g))
    return [(g, i) for g in order for i in range(len(free_at[g]))]


def _critical(bars: list[Bar], parents: dict[int, list[int]], ends: dict[int, float]) -> list[int]:
    """Node ids of the chain that ended last, walking back through the parent that ended last
    (through gathering and parameter nodes, which are not bars)."""
    if not bars:
        return []
    is_bar = {b.node_id: b for b in bars}
    node: int | None = max(bars, key=lambda b: (b.end, b.node_id)).node_id
    chain: list[int] = []
    seen: set[int] = set()
    while node is not None and node not in seen:
        seen.add(node)
        if node in is_bar:
            chain.append(node)
            is_bar[node].critical = True
        candidates = [p for p in parents.get(node, []) if p in ends]
        node = max(candidates, key=lambda p: (ends[p], p)) if candidates else None
    return chain[::-1]


async def _timeline_of(request: web.Request) -> tuple[Timeline, str]:
    row = await get_dispatch(request)
    store = request.app[STORE]
    rows = await store.node_rows(row.dispatch_id)
    graph = await request.app[GRAPHS].graph(store, row.dispatch_id) or {"edges": []}
    reused = {r.node_id for r in rows if r.start_time and r.start_time == r.end_time
              and r.kind in USER_KINDS and r.status == Status.COMPLETED and not r.worker}
    return timeline(rows, graph["edges"], row.start_time, row.end_time, datetime.now().astimezone(),
                    reused), str(row.status)


@routes.get("/ui/dispatches/{dispatch_id}/timeline")
async def timeline_json(request: web.Request) -> web.Response:
    """Bars as ``[node, name index, status code, start, end, lane, critical, queued]``."""
    dispatch_id_of(request)
    tl, status = await _timeline_of(request)
    names = sorted({b.name for b in tl.bars})
    index = {n: i for i, n in enumerate(names)}
    lane = {key: i for i, key in enumerate(tl.lanes)}
    return web.json_response({
        "status": status, "span": round(tl.span, 3), "names": names,
        "lanes": [[g, r] for g, r in tl.lanes],
        "bars": [[b.node_id, index[b.name], live.code(b.status), round(b.start, 3), round(b.end, 3),
                  lane[(b.group, b.row)], int(b.critical), round(b.queued, 3)] for b in tl.bars]})


@routes.get("/ui/dispatches/{dispatch_id}/stats")
async def stats_fragment(request: web.Request) -> web.StreamResponse:
    tl, status = await _timeline_of(request)
    slowest = sorted(tl.bars, key=lambda b: -(b.end - b.start))[:SLOWEST]
    return aiohttp_jinja2.render_template("_stats.html", request, {
        "tl": tl, "slowest": slowest, "status": status, "duration": duration,
        "workers": len({b.group for b in tl.bars if b.group not in (NOT_RECORDED, REUSED)})})
