"""Prometheus metrics: ``GET /metrics`` (text format, behind the token like every request).

Nothing here is collected inside the runner. Node and dispatch facts come from the Recorder's
commit stream (``Recorder.subscribe``): only what is on disk is counted, once, as it was
committed. A commit is queued by the subscriber (no I/O on the loop's hot path) and counted by
a task of this module, which learns each dispatch's node names (and, for graphs up to
``GRAPH_MAX`` nodes, their parents: a node's queue time is from its last parent's end, or the
dispatch's start, to its own start) once: from the runner's machine when it runs here (the
graph in memory), else from the store. Store write latency comes from the
store (``on_write``); connections, the recorder's backlog, trigger fires and the dispatches by
status (one store read) are read when scraped.

Electron names are labels: past ``NAMES_MAX`` distinct names, further ones count as ``other``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .authz import admin_only
from .connections import open_connections
from .keys import RECORDER, RUNNER, STORE, TRIGGERS
from .machine import DispatchMachine
from .recorder import Commit, Recorder
from .state import DispatchUpdate, NodeUpdate, Status, is_terminal
from .store import DispatchQuery, DispatchStore
from .store.base import USER_KINDS

log = logging.getLogger("covalent.dispatcher")

NAMES_MAX = 500
ENDED_MAX = 10_000  # dispatches remembered as ended: later reports of theirs are not counted
GRAPH_MAX = 20_000  # nodes: larger graphs are not read for queue times
SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600)


@dataclass(slots=True)
class _Dispatch:
    """What the counting needs to know of one running dispatch (dropped when it ends)."""

    names: Sequence[tuple[str, str]]  # (name, kind) by node id
    parents: Callable[[int], Iterable[int]] | None  # a node's parents; None: graph too large
    start: float | None
    ends: dict[int, float] = field(default_factory=dict)
    started: set[int] = field(default_factory=set)
    done: set[int] = field(default_factory=set)


class Metrics:
    """The dispatcher's metrics and the task that counts commits; one per app."""

    def __init__(self, store: DispatchStore, recorder: Recorder) -> None:
        self.store = store
        self.recorder = recorder
        self.registry = CollectorRegistry()
        r = self.registry
        self.started = Counter("covalent_nodes_started", "Nodes that started running, by "
                               "electron name", ["electron"], registry=r)
        self.completed = Counter("covalent_nodes_completed", "Nodes that completed", ["electron"],
                                 registry=r)
        self.failed = Counter("covalent_nodes_failed", "Nodes that failed", ["electron"],
                              registry=r)
        self.cancelled = Counter("covalent_nodes_cancelled", "Nodes cancelled", ["electron"],
                                 registry=r)
        self.run_seconds = Histogram("covalent_node_run_seconds", "From a node's start to its "
                                     "end (completed or failed)", buckets=SECONDS, registry=r)
        self.queue_seconds = Histogram("covalent_node_queue_seconds", "From the moment a node "
                                       "could run (its last parent ended, or its dispatch "
                                       "started) to its start", buckets=SECONDS, registry=r)
        self.ended = Counter("covalent_dispatches_ended", "Dispatches that ended, by final "
                             "status", ["status"], registry=r)
        self.write_seconds = Histogram("covalent_store_write_seconds", "Store write "
                                       "transactions, by operation", ["operation"],
                                       buckets=SECONDS, registry=r)
        self.scraped = _Scraped()
        r.register(self.scraped)
        self._commits: list[Commit] = []
        self._queued = asyncio.Event()
        self._dispatches: dict[str, _Dispatch] = {}
        self._ended: dict[str, None] = {}  # oldest first
        self._names: set[str] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        # the machine of a dispatch running here (its graph, parsed already), if any
        self.running: Callable[[str], DispatchMachine | None] = lambda dispatch_id: None

    def on_commit(self, commit: Commit) -> None:
        """The Recorder's subscriber: queue, count later (never blocks the writer)."""
        self._commits.append(commit)
        self._idle.clear()
        self._queued.set()

    def on_write(self, operation: str, seconds: float) -> None:
        self.write_seconds.labels(operation).observe(seconds)

    async def run(self) -> None:
        while True:
            await self._queued.wait()
            self._queued.clear()
            while self._commits:
                commits, self._commits = self._commits, []
                for commit in commits:
                    try:
                        await self._count(commit)
                    except asyncio.CancelledError:
                        raise
                    except Exception:  # a metric is not worth a stuck counter: log, go on
                        log.exception("metrics: a commit could not be counted")
            self._idle.set()

    async def drain(self) -> None:
        """Wait until every commit so far is counted (a scrape shows what is on disk)."""
        await self._idle.wait()

    async def _count(self, commit: Commit) -> None:
        for n, u in enumerate(commit.nodes):
            if n % 2000 == 1999:
                await asyncio.sleep(0)  # 100,000 updates in a commit: let requests in between
            if u.dispatch_id in self._ended:
                continue  # a late report the store did not apply to a final dispatch
            d = self._dispatches.get(u.dispatch_id) or await self._load(u.dispatch_id)
            if d is not None:
                self._count_node(d, u)
        for du in commit.dispatches:
            self._count_dispatch(du)
        for dispatch_id in commit.ended:
            self._end(dispatch_id)

    def _end(self, dispatch_id: str) -> None:
        self._dispatches.pop(dispatch_id, None)
        self._ended[dispatch_id] = None
        if len(self._ended) > ENDED_MAX:
            del self._ended[next(iter(self._ended))]

    def _count_node(self, d: _Dispatch, u: NodeUpdate) -> None:
        i = u.node_id
        end = _seconds(u.end_time)
        if end is not None and u.status in (Status.COMPLETED, Status.FAILED):
            d.ends[i] = end
        if not 0 <= i < len(d.names) or d.names[i][1] not in USER_KINDS or u.reused_from:
            return
        label = self._label(d.names[i][0])
        start = _seconds(u.start_time)
        if u.status in (Status.RUNNING, Status.COMPLETED, Status.FAILED) and start is not None \
                and i not in d.started and i not in d.done:
            d.started.add(i)
            self.started.labels(label).inc()
            ready = self._ready(d, i)
            if ready is not None:
                self.queue_seconds.observe(max(start - ready, 0.0))
        if u.status is None or not is_terminal(u.status) or i in d.done:
            return
        d.done.add(i)
        counter = {Status.COMPLETED: self.completed, Status.FAILED: self.failed,
                   Status.CANCELLED: self.cancelled}[u.status]
        counter.labels(label).inc()
        if u.status != Status.CANCELLED and start is not None and end is not None:
            self.run_seconds.observe(max(end - start, 0.0))

    def _ready(self, d: _Dispatch, node_id: int) -> float | None:
        if d.parents is None:
            return None
        ends = [d.ends[p] for p in d.parents(node_id) if p in d.ends]
        return max(ends) if ends else d.start

    def _count_dispatch(self, du: DispatchUpdate) -> None:
        d = self._dispatches.get(du.dispatch_id)
        if du.status == Status.RUNNING and d is not None and du.start_time:
            d.start = _seconds(du.start_time)  # started, or resumed
        if du.status is not None and is_terminal(du.status) and du.dispatch_id not in self._ended:
            self.ended.labels(str(du.status)).inc()
            self._end(du.dispatch_id)

    async def _load(self, dispatch_id: str) -> _Dispatch | None:
        row = await self.store.get_dispatch(dispatch_id)
        if row is None:
            return None
        machine = self.running(dispatch_id)
        names: Sequence[tuple[str, str]]
        parents: Callable[[int], Iterable[int]] | None
        if machine is not None:  # not the graph's JSON again: parsing it was a tenth of the
            names = _Names(machine.graph.nodes)  # server's work on a 1,025-node square (#23)
            parents = machine.parent_ids if len(names) <= GRAPH_MAX else None
        else:
            names, parents = await self._stored_graph(row.dispatch_id, row.graph_json)
        d = _Dispatch(names, parents, _seconds(row.start_time))
        self._dispatches[dispatch_id] = d
        return d

    async def _stored_graph(self, dispatch_id: str, graph_json: str
                            ) -> tuple[Sequence[tuple[str, str]], Callable[[int], Iterable[int]] | None]:
        if len(graph_json) < GRAPH_MAX * 1000:  # about 1 KB of JSON per node at most
            graph = await asyncio.to_thread(json.loads, graph_json)
            if len(graph["nodes"]) <= GRAPH_MAX:
                parents: dict[int, list[int]] = {}
                for src, dst, *_ in graph["edges"]:
                    parents.setdefault(int(dst), []).append(int(src))
                return ([(n["name"], n["kind"]) for n in graph["nodes"]],
                        lambda node_id: parents.get(node_id, ()))
        return await self.store.node_names(dispatch_id), None

    def _label(self, name: str) -> str:
        if name in self._names:
            return name
        if len(self._names) >= NAMES_MAX:
            return "other"
        self._names.add(name)
        return name


class _Names(Sequence[tuple[str, str]]):
    """(name, kind) by node id, read from a graph's nodes when asked."""

    def __init__(self, nodes: Sequence[Any]) -> None:
        self.nodes = nodes

    def __len__(self) -> int:
        return len(self.nodes)

    def __getitem__(self, i: Any) -> Any:
        node = self.nodes[i]
        return node.name, str(node.kind)


class _Scraped(Collector):
    """What is read when scraped: set by ``handler`` just before the text is made."""

    def __init__(self) -> None:
        self.dispatches: dict[str, int] = {}
        self.backlog = 0
        self.http = 0
        self.database = 0
        self.fires = 0

    def collect(self) -> Iterator[Metric]:
        by_status = GaugeMetricFamily("covalent_dispatches", "Stored dispatches, by status",
                                      labels=["status"])
        shown = [str(s) for s in _STATUSES] + sorted(set(self.dispatches) - set(map(str, _STATUSES)))
        for status in shown:
            by_status.add_metric([status], self.dispatches.get(status, 0))
        yield by_status
        yield GaugeMetricFamily("covalent_recorder_backlog", "Updates queued for the store, "
                                "not yet written", value=self.backlog)
        connections = GaugeMetricFamily("covalent_open_connections", "Open connections",
                                        labels=["kind"])
        connections.add_metric(["http"], self.http)
        connections.add_metric(["database"], self.database)
        yield connections
        yield CounterMetricFamily("covalent_trigger_fires", "Trigger fires since the server "
                                  "started", value=self.fires)


_STATUSES = (Status.NEW_OBJECT, Status.RUNNING, Status.COMPLETED, Status.FAILED, Status.CANCELLED)
METRICS = web.AppKey("metrics", Metrics)


async def handler(request: web.Request) -> web.Response:
    app = request.app
    metrics = app[METRICS]
    await asyncio.wait_for(metrics.drain(), 10)
    page = await app[STORE].page_dispatches(DispatchQuery(limit=0, top_level=False))
    s = metrics.scraped
    s.dispatches, s.backlog = page.counts, app[RECORDER].backlog
    s.http, s.database = open_connections(request), app[STORE].connections()
    s.fires = app[TRIGGERS].fired
    body = await asyncio.to_thread(generate_latest, metrics.registry)
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; "
                                            "charset=utf-8"})


async def _metrics_ctx(app: web.Application) -> AsyncIterator[None]:
    metrics = Metrics(app[STORE], app[RECORDER])
    app[METRICS] = metrics

    def running(dispatch_id: str) -> DispatchMachine | None:
        run = app[RUNNER].runs.get(dispatch_id) if RUNNER in app else None
        return run.machine if run is not None else None

    metrics.running = running
    app[STORE].on_write = metrics.on_write
    unsubscribe = app[RECORDER].subscribe(metrics.on_commit)
    task = asyncio.create_task(metrics.run(), name="covalent-metrics")
    try:
        yield
    finally:
        unsubscribe()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def setup(app: web.Application) -> None:
    """``GET /metrics``; counting starts once the store and recorder exist."""
    app.router.add_get("/metrics", admin_only(handler))  # every user's dispatches (#26)
    app.cleanup_ctx.append(_metrics_ctx)


def _seconds(iso: str | None) -> float | None:
    """Epoch seconds of an ISO time (None if absent or unreadable).

    >>> _seconds("1970-01-01T00:00:01+00:00"), _seconds(None), _seconds("soon")
    (1.0, None, None)
    """
    if not iso:
        return None
    try:
        return datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return None
