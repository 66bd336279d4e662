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

from markupsafe import Markup, escape

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
    first_start: str | None = None  # ISO: when the first of them started
    last_end: str | None = None  # ISO: when the last of them ended (None while one runs)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "total": self.total, "completed": self.completed,
                "running": self.running, "failed": self.failed, "cancelled": self.cancelled,
                "seconds": seconds(self.first_start, self.last_end if not self.running else None)}


def by_name(rows: list[NodeRow]) -> list[ElectronProgress]:
    """Per electron name (user electrons and sublattices only), in order of first appearance.

    >>> from dispatcher.store import NodeRow
    >>> def r(i, name, kind, st, t0=None, t1=None): return NodeRow(i, name, kind, st, t0, t1, None, False, None)
    >>> [p.to_json() for p in by_name([r(0, "add", "electron", Status.COMPLETED, "2026-01-01T00:00:00+00:00",
    ...     "2026-01-01T00:00:02+00:00"), r(1, ":parameter:1", "parameter", Status.COMPLETED),
    ...     r(2, "add", "electron", Status.FAILED, "2026-01-01T00:00:01+00:00", "2026-01-01T00:00:05+00:00")])]
    [{'name': 'add', 'total': 2, 'completed': 1, 'running': 0, 'failed': 1, 'cancelled': 0, 'seconds': 5.0}]
    """
    out: dict[str, ElectronProgress] = {}
    for r in rows:
        if r.kind not in USER_KINDS:
            continue
        p = out.get(r.name)
        if p is None:
            p = out[r.name] = ElectronProgress(display_name(r.name))
        p.total += 1
        if r.start_time and (p.first_start is None or r.start_time < p.first_start):
            p.first_start = r.start_time
        if r.end_time and (p.last_end is None or r.end_time > p.last_end):
            p.last_end = r.end_time
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
    """A time for people (UTC, to the second, saying so; the browser shows it in local time).

    >>> when("2026-01-02T03:04:05.678+00:00"), when(None)
    ('2026-01-02 03:04:05 UTC', '')
    """
    t = parse_time(iso)
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if t else ""


def at(iso: str | None, missing: str = "—") -> Markup:
    """A ``<time>`` element: UTC in the page, rewritten to the browser's time zone by ui.js.

    >>> str(at("2026-01-02T03:04:05+00:00"))
    '<time datetime="2026-01-02T03:04:05+00:00" title="2026-01-02 03:04:05 UTC">2026-01-02 03:04:05 UTC</time>'
    >>> str(at(None))
    '—'
    """
    text = when(iso)
    if not text:
        return Markup(escape(missing))
    return Markup('<time datetime="{0}" title="{1}">{1}</time>').format(iso, text)


def size(n: int | None) -> str:
    """Bytes for people.

    >>> size(512), size(2048), size(5 * 2**20 + 1), size(3 * 2**30), size(None)
    ('512 bytes', '2.0 KiB', '5.0 MiB', '3.0 GiB', '')
    """
    if n is None:
        return ""
    if n < 1024:
        return f"{n} byte{'' if n == 1 else 's'}"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"


def plural(n: int, word: str, many: str = "") -> str:
    """``1 dispatch``, ``2 dispatches``.

    >>> plural(1, "dispatch", "dispatches"), plural(2, "node"), plural(0, "node")
    ('1 dispatch', '2 nodes', '0 nodes')
    """
    return f"{n} {word if n == 1 else (many or word + 's')}"


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
