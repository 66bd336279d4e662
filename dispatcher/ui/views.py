"""What the pages and the progress API show, computed from store records (pure, no I/O but
the cache's reads): per-name electron counts, times for people, and the parsed graphs and
layouts of recently viewed dispatches.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from covalent.wire import pieces

from ..state import TERMINAL, Status
from ..store import DispatchStore, NodeRow
from ..store.base import USER_KINDS
from covalent.layout import Layout, display_name, layout



@dataclass(slots=True)
class ElectronProgress:
    """How the nodes of one electron name are doing (the CLI draws one bar per name)."""

    name: str
    total: int = 0
    completed: int = 0
    running: int = 0
    failed: int = 0
    cancelled: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "total": self.total, "completed": self.completed,
                "running": self.running, "failed": self.failed, "cancelled": self.cancelled}


def by_name(rows: list[NodeRow]) -> list[ElectronProgress]:
    """Per electron name (user electrons and sublattices only), in order of first appearance.

    >>> from dispatcher.store import NodeRow
    >>> def r(i, name, kind, st): return NodeRow(i, name, kind, st, None, None, None, False, None)
    >>> [p.to_json() for p in by_name([r(0, "add", "electron", Status.COMPLETED),
    ...     r(1, ":parameter:1", "parameter", Status.COMPLETED), r(2, "add", "electron", Status.FAILED)])]
    [{'name': 'add', 'total': 2, 'completed': 1, 'running': 0, 'failed': 1, 'cancelled': 0}]
    """
    out: dict[str, ElectronProgress] = {}
    for r in rows:
        if r.kind not in USER_KINDS:
            continue
        p = out.get(r.name)
        if p is None:
            p = out[r.name] = ElectronProgress(display_name(r.name))
        p.total += 1
        if r.status == Status.COMPLETED:
            p.completed += 1
        elif r.status == Status.RUNNING:
            p.running += 1
        elif r.status == Status.FAILED:
            p.failed += 1
        elif r.status == Status.CANCELLED:
            p.cancelled += 1
    return list(out.values())


STATUS_LABELS = {"NEW_OBJECT": "Not started", "RUNNING": "Running", "COMPLETED": "Completed",
                 "FAILED": "Failed", "CANCELLED": "Cancelled"}


def label(status: str) -> str:
    """How a status is named on a filter or a count.

    >>> label("NEW_OBJECT"), label("POSTPROCESSING")
    ('Not started', 'Postprocessing')
    """
    return STATUS_LABELS.get(str(status), str(status).replace("_", " ").capitalize())


def parse_time(iso: str | None) -> datetime | None:
    if not iso:
        return None
    try:
        when = datetime.fromisoformat(iso)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def when(iso: str | None) -> str:
    """A time for people (UTC, to the second).

    >>> when("2026-01-02T03:04:05.678+00:00"), when(None)
    ('2026-01-02 03:04:05', '')
    """
    t = parse_time(iso)
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if t else ""


def seconds(start: str | None, end: str | None, now: datetime | None = None) -> float | None:
    """Seconds from ``start`` to ``end`` (or to now, while running)."""
    a = parse_time(start)
    if a is None:
        return None
    b = parse_time(end) or now or datetime.now(UTC)
    return max((b - a).total_seconds(), 0.0)


def duration(value: float | None) -> str:
    """A duration for people.

    >>> duration(0.25), duration(75), duration(7322), duration(None)
    ('0.25 s', '1 m 15 s', '2 h 2 m', '')
    """
    if value is None:
        return ""
    if value < 10:
        return f"{value:.2f} s"
    if value < 60:
        return f"{value:.0f} s"
    if value < 3600:
        return f"{int(value // 60)} m {int(value % 60)} s"
    return f"{int(value // 3600)} h {int(value % 3600 // 60)} m"


@dataclass(slots=True)
class GraphCache:
    """Parsed graphs and computed layouts of the last few dispatches viewed (a stored graph
    never changes, so neither does a layout of it; statuses are merged in per request)."""

    capacity: int = 8
    graphs: collections.OrderedDict[str, dict[str, Any]] = field(default_factory=collections.OrderedDict)
    layouts: collections.OrderedDict[tuple[str, bool, tuple[str, ...]], Layout] = field(
        default_factory=collections.OrderedDict)

    async def graph(self, store: DispatchStore, dispatch_id: str) -> dict[str, Any] | None:
        found = self.graphs.get(dispatch_id)
        if found is None:
            row = await store.get_dispatch(dispatch_id)
            if row is None:
                return None
            found = await asyncio.to_thread(pieces.loads, row.graph_json)
            self._keep(self.graphs, dispatch_id, found)
        else:
            self.graphs.move_to_end(dispatch_id)
        return found

    async def layout(self, dispatch_id: str, graph: dict[str, Any], show_all: bool,
                     expand: tuple[str, ...]) -> Layout:
        key = (dispatch_id, show_all, expand)
        found = self.layouts.get(key)
        if found is None:  # networkx on 10,000 nodes takes a moment: off the loop
            found = await asyncio.to_thread(layout, graph, show_all, expand)
            self._keep(self.layouts, key, found)
        else:
            self.layouts.move_to_end(key)
        return found

    def forget(self, dispatch_id: str) -> None:
        """A deleted dispatch: drop what was kept of it."""
        self.graphs.pop(dispatch_id, None)
        for key in [k for k in self.layouts if k[0] == dispatch_id]:
            del self.layouts[key]

    def _keep(self, cache: collections.OrderedDict[Any, Any], key: Any, value: Any) -> None:
        cache[key] = value
        while len(cache) > self.capacity:
            cache.popitem(last=False)
