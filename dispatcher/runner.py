"""Run dispatches on the Dask cluster and record every node's outcome in the store.

Model: a dispatch is NEW_OBJECT when stored, RUNNING once its graph is submitted, and ends
COMPLETED, FAILED (some node failed; its descendants stay NEW_OBJECT, independent branches run
to the end) or CANCELLED. The runner owns one ``DispatchRun`` per running dispatch, which
owns the Dask futures of that dispatch's nodes; a future is released as soon as its outcome
is recorded, so Dask frees memory as it would for a plain graph.

Facts reach the store through one writer task that commits whatever accumulated while the
previous commit ran (natural batching, no timer). Waiters on a dispatch are woken only after
its terminal status is committed, so whatever the API reports is on disk.

Pushed, not polled: completion comes from Dask futures, start times from worker events.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from dask._expr import LLGExpr
from distributed import Client, Future
from distributed.client import FutureCancelledError
from distributed.scheduler import KilledWorker

from covalent._graph import Edge, NodeKind, WorkflowGraph

from covalent._assembly import assembled_bytes
from covalent.wire import clean_text

from .compile import Key, compile_graph
from .errors import IncompatibleClient, is_busy_error, is_disk_error
from .execute import (START_TOPIC, CancelPlugin, NodeOutcome, NodeTaskError, now_iso,
                      runtime_versions)
from .store import DispatchUpdate, NodeUpdate, SqliteStore

log = logging.getLogger("covalent.dispatcher")

COALESCE_S = 0.02  # how long a completed node's output may wait to be fetched with others
MAX_BATCH = 1000
VERSIONS_TTL_S = 30.0  # how long the workers' Python/cloudpickle versions are trusted


def submission_priority(started: str) -> int:
    """Dask user priority of a dispatch's tasks: earlier start, higher priority.

    >>> submission_priority("2026-01-01T00:00:00+00:00") > submission_priority("2026-01-01T00:00:01+00:00")
    True
    """
    if not started:
        return 0
    return -int(datetime.fromisoformat(started).timestamp() * 1_000_000)


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


@dataclass(eq=False)
class DispatchRun:
    """The live state of one running dispatch.

    ``feeds`` maps a node to the gathering nodes it is a parent of; ``missing`` counts the
    parents each gathering node still waits for; ``parts`` keeps the outputs a gathering node
    will be made of until it is recorded.
    """

    dispatch_id: str
    graph: WorkflowGraph
    keys: dict[int, Key]
    futures: dict[int, Future[Any]] = field(default_factory=dict)
    feeds: dict[int, list[int]] = field(default_factory=dict)
    missing: dict[int, int] = field(default_factory=dict)
    parts: dict[int, bytes] = field(default_factory=dict)
    gathered_from: dict[int, list[Edge]] = field(default_factory=dict)
    unused: dict[int, int] = field(default_factory=dict)  # gathering children not yet built
    done: set[int] = field(default_factory=set)
    failed: dict[int, str] = field(default_factory=dict)
    cancelled: set[int] = field(default_factory=set)
    cancel_requested: bool = False
    result: bytes | None = None
    task: asyncio.Task[None] | None = None

    @property
    def postprocess_id(self) -> int:
        return self.graph.nodes[-1].id if self.graph.nodes[-1].kind is NodeKind.POSTPROCESS else -1

    def track_derived(self, derived: list[int]) -> None:
        parents = self.graph.parents()
        for node_id in derived:
            edges = self.gathered_from[node_id] = parents[node_id]
            self.missing[node_id] = len(edges)
            for e in edges:
                self.feeds.setdefault(e.src, []).append(node_id)
                self.unused[e.src] = self.unused.get(e.src, 0) + 1


class Runner:
    """Submits dispatches to Dask and records their outcomes; one per server."""

    def __init__(self, store: SqliteStore, client: Client, public_url: str = "",
                 token: str = "") -> None:
        self.store = store
        self.client = client
        self.public_url = public_url  # how workers reach this server (sublattices)
        self.token = token
        self.runs: dict[str, DispatchRun] = {}
        self._nodes: list[NodeUpdate] = []
        self._dispatches: list[DispatchUpdate] = []
        self._finished: list[str] = []
        self._dirty = asyncio.Event()
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._writer: asyncio.Task[None] | None = None
        self.write_error: str | None = None
        self.write_busy = False  # the last write failed because another process locks the store
        self.store_failed: dict[str, str] = {}  # dispatch id -> why an output was not stored
        self.unwritten: set[str] = set()  # dispatches whose latest facts could not be stored
        self.closing = False
        self._versions: tuple[float, dict[str, dict[str, str]]] | None = None

    async def start(self) -> None:
        self.client.subscribe_topic(START_TOPIC, self._on_start)
        await self.client.register_plugin(CancelPlugin(), name=CancelPlugin.name)
        self._writer = asyncio.create_task(self._write_loop(), name="covalent-store-writer")

    async def check_client(self, versions: Any) -> None:
        """Refuse a client whose pickles the workers could not load (Python or cloudpickle
        major.minor differ); a client that does not say (curl) is not checked."""
        if not isinstance(versions, dict):
            return
        workers = await self._worker_versions()
        problems = []
        for name in ("python", "cloudpickle"):
            mine = versions.get(name)
            if not isinstance(mine, str):
                continue
            theirs = sorted({v[name] for v in workers.values()
                             if v.get(name) and _minor(v[name]) != _minor(mine)})
            if theirs:
                problems.append(f"{name} {mine} here, {', '.join(theirs)} on the workers")
        if problems:
            raise IncompatibleClient(
                "the Dask workers could not load what this client pickles ("
                + "; ".join(problems) + "): use the same Python and cloudpickle versions")

    async def _worker_versions(self) -> dict[str, dict[str, str]]:
        now = asyncio.get_running_loop().time()
        if self._versions is None or now - self._versions[0] > VERSIONS_TTL_S:
            try:
                found = await asyncio.wait_for(self.client.run(runtime_versions), 10)
            except Exception as exc:  # no workers reachable: the run itself will say so
                log.warning("could not ask the workers for their versions: %s", exc)
                return {}
            self._versions = (now, dict(found))
        return self._versions[1]

    async def close(self) -> None:
        self.closing = True
        for waiters in self._waiters.values():  # answer long-polls now: the server is stopping
            for ev in waiters:
                ev.set()
        for run in list(self.runs.values()):
            if run.task is not None:
                run.task.cancel()
        await asyncio.gather(*(r.task for r in self.runs.values() if r.task), return_exceptions=True)
        if self._writer is not None:
            self._dirty.set()
            await self._flush()
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)

    # -- writing ---------------------------------------------------------------------------

    def _record(self, node: NodeUpdate | None = None, dispatch: DispatchUpdate | None = None) -> None:
        if node is not None:
            self._nodes.append(node)
        if dispatch is not None:
            self._dispatches.append(dispatch)
        self._dirty.set()

    async def _flush(self) -> None:
        nodes, dispatches, finished = self._nodes, self._dispatches, self._finished
        self._nodes, self._dispatches, self._finished = [], [], []
        if nodes or dispatches:
            try:
                await self._write(nodes, dispatches)
                self.write_error = None
                self.unwritten.clear()
            except Exception as exc:  # even that failed: keep serving, say why, retry later
                self.write_busy = is_busy_error(exc)
                self.write_error = f"{type(exc).__name__}: {exc}"
                log.exception("store write failed; %d node updates kept for retry", len(nodes))
                self._nodes[:0], self._dispatches[:0], self._finished[:0] = nodes, dispatches, finished
                self.unwritten = {u.dispatch_id for u in nodes} | {d.dispatch_id for d in dispatches}
                for dispatch_id in self.unwritten:  # tell those waiting, rather than hang
                    for ev in self._waiters.get(dispatch_id, ()):
                        ev.set()
                raise
        for dispatch_id in finished:
            for ev in self._waiters.pop(dispatch_id, ()):
                ev.set()

    async def _write(self, nodes: list[NodeUpdate], dispatches: list[DispatchUpdate]) -> None:
        """One transaction; if the batch cannot be written, never retry it as it is forever:
        a full disk keeps the facts without the outputs, a bad record is isolated."""
        try:
            await self.store.run(self.store.apply, nodes, dispatches)
        except Exception as exc:
            if is_busy_error(exc):
                raise  # another process holds the database: the same batch will go through
            if is_disk_error(exc):
                # The outputs do not fit: record those nodes (and their dispatches) as
                # FAILED with the reason, which takes a few bytes, rather than nothing.
                log.error("store full: %d outputs not stored: %s", len(nodes), exc)
                nodes, dispatches = self._without_outputs(nodes, dispatches, exc)
                await self.store.run(self.store.apply, nodes, dispatches)
                return
            log.error("a batch of %d updates cannot be written (%s: %s); isolating the bad one",
                      len(nodes) + len(dispatches), type(exc).__name__, exc)
            await self._isolate(nodes, dispatches)

    async def _isolate(self, nodes: list[NodeUpdate], dispatches: list[DispatchUpdate]) -> None:
        """Write each update alone; one that fails fails its node (and dispatch) with the reason."""
        for u in nodes:
            try:
                await self.store.run(self.store.apply, [u], [])
            except Exception as exc:
                if is_busy_error(exc) or is_disk_error(exc):
                    raise
                reason = (f"the dispatcher could not record this node ({type(exc).__name__}: "
                          f"{clean_text(str(exc), 2000)})")
                log.error("node %s of %s: %s", u.node_id, u.dispatch_id, reason)
                self.store_failed.setdefault(u.dispatch_id, reason)
                await self._apply_or_drop([NodeUpdate(u.dispatch_id, u.node_id, status="FAILED",
                                                      end_time=now_iso(), error=reason)], [])
        for d in dispatches:
            if d.status == "COMPLETED" and d.dispatch_id in self.store_failed:
                d = replace(d, status="FAILED", result=None,
                            error=f"some nodes could not be recorded: {self.store_failed[d.dispatch_id]}")
            try:
                await self.store.run(self.store.apply, [], [d])
            except Exception as exc:
                if is_busy_error(exc) or is_disk_error(exc):
                    raise
                reason = f"the dispatcher could not record it: {type(exc).__name__}: {exc}"
                log.error("dispatch %s: %s", d.dispatch_id, reason)
                await self._apply_or_drop([], [DispatchUpdate(d.dispatch_id, status="FAILED",
                                                              end_time=now_iso(), error=reason)])

    async def _apply_or_drop(self, nodes: list[NodeUpdate], dispatches: list[DispatchUpdate]) -> None:
        try:
            await self.store.run(self.store.apply, nodes, dispatches)
        except Exception as exc:
            if is_busy_error(exc) or is_disk_error(exc):
                raise
            log.exception("dropping an update that cannot be written at all: %s", exc)

    def _without_outputs(self, nodes: list[NodeUpdate], dispatches: list[DispatchUpdate],
                         exc: BaseException) -> tuple[list[NodeUpdate], list[DispatchUpdate]]:
        reason = (f"the dispatcher could not store this output ({type(exc).__name__}: {exc}); "
                  "free space in its data dir and redispatch")
        out_nodes = []
        for u in nodes:
            if u.output is not None:
                self.store_failed.setdefault(u.dispatch_id, reason)
                u = replace(u, status="FAILED", output=None, error=reason)
            out_nodes.append(u)
        out_dispatches = []
        for d in dispatches:
            if d.result is not None or (d.status == "COMPLETED" and d.dispatch_id in self.store_failed):
                self.store_failed.setdefault(d.dispatch_id, reason)
                d = replace(d, status="FAILED", result=None,
                            error=f"some outputs could not be stored: {self.store_failed[d.dispatch_id]}")
            out_dispatches.append(d)
        return out_nodes, out_dispatches

    async def _write_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await self._flush()
            except Exception:  # already logged; back off before retrying the same batch
                await asyncio.sleep(1.0)
                self._dirty.set()

    async def flushed(self) -> None:
        """Commit everything recorded so far (used before answering a request)."""
        await self._flush()

    def waiter(self, dispatch_id: str) -> asyncio.Event:
        """An event set once the dispatch's terminal status is committed.

        Register it *before* reading the status, then ``release`` it when done waiting.
        """
        ev = asyncio.Event()
        if self.closing:
            ev.set()
        self._waiters.setdefault(dispatch_id, set()).add(ev)
        return ev

    def release(self, dispatch_id: str, ev: asyncio.Event) -> None:
        waiters = self._waiters.get(dispatch_id)
        if waiters is not None:
            waiters.discard(ev)
            if not waiters:
                del self._waiters[dispatch_id]

    # -- running ---------------------------------------------------------------------------

    def _on_start(self, event: tuple[float, dict[str, Any]]) -> None:
        _, msg = event
        if msg.get("d") in self.runs:
            self._record(NodeUpdate(msg["d"], int(msg["n"]), status="RUNNING",
                                    start_time=msg["t"], only_if_new=True))

    async def submit(self, dispatch_id: str, graph: WorkflowGraph,
                     preset: dict[int, tuple[bytes, str, str]], started: str = "") -> None:
        """Compile the dispatch into one Dask graph, submit it and start tracking it.

        ``started`` (ISO time its root dispatch started) orders the tasks of concurrent
        dispatches: earlier ones run first, so a burst of later dispatches never starves them.

        All or nothing: if anything fails before the graph is running, the dispatch is
        recorded FAILED with the reason (never left RUNNING without a tracker).
        """
        run: DispatchRun | None = None
        try:
            compiled = compile_graph(dispatch_id, graph, preset, self.public_url, self.token)
            run = DispatchRun(dispatch_id, graph, compiled.tasks)
            run.track_derived(compiled.derived)
            self.runs[dispatch_id] = run
            stamp = now_iso()
            self._record(dispatch=DispatchUpdate(dispatch_id, status="RUNNING", start_time=stamp))
            for node_id, (data, start, end) in preset.items():
                if node_id not in compiled.inlined:
                    self._record(NodeUpdate(dispatch_id, node_id, status="COMPLETED",
                                            start_time=start, end_time=end, output=data))
            for node_id, data in compiled.inlined.items():
                self._completed(run, node_id, data, start=stamp, end=stamp)
            for node_id in compiled.derived:
                # Gathers nothing (a lattice returning a constant, an empty list); a gathering
                # node whose parents were all inlined was assembled by the loop above.
                if not run.gathered_from[node_id] and node_id not in run.done:
                    self._assemble(run, node_id)
            if compiled.dsk:
                # Name the graph ourselves: otherwise Dask tokenizes every task (pickling each
                # spec) to name it, which costs more than running a small workflow.
                expr = LLGExpr(compiled.dsk, _determ_token=f"{dispatch_id}-{uuid.uuid4().hex}")
                futures = self.client.get(expr, list(compiled.tasks.values()), sync=False,
                                          priority=submission_priority(started))
                run.futures = dict(zip(compiled.tasks, futures, strict=True))
        except Exception as exc:
            log.exception("submitting dispatch %s failed", dispatch_id)
            self.runs.pop(dispatch_id, None)
            if run is not None and run.futures:
                await self.client.cancel(list(run.futures.values()), force=True)
            self._finished.append(dispatch_id)
            self._record(dispatch=DispatchUpdate(
                dispatch_id, status="FAILED", end_time=now_iso(),
                error=f"the dispatcher could not submit this dispatch: {type(exc).__name__}: {exc}"))
            return
        run.task = asyncio.create_task(self._track(run), name=f"track-{dispatch_id}")
        log.info("dispatch %s submitted: %d nodes, %d tasks, %d reused", dispatch_id,
                 len(graph.nodes), len(compiled.dsk), len(preset))

    async def _track(self, run: DispatchRun) -> None:
        try:
            if run.futures:
                done = _Completions(list(run.futures.items()))
                while done.outstanding:
                    batch = await done.next_batch(COALESCE_S, MAX_BATCH)
                    for item in await self._absorb(run, batch):
                        done.watch(item)
            self._finish(run)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never let a tracking bug leave a dispatch RUNNING forever
            log.exception("tracking dispatch %s failed", run.dispatch_id)
            run.failed.setdefault(-1, f"dispatcher error while tracking: {type(exc).__name__}: {exc}")
            self._finish(run)

    async def _absorb(self, run: DispatchRun,
                      batch: list[tuple[int, Future[Any]]]) -> list[tuple[int, Future[Any]]]:
        """Record the outcomes of ``batch``; return the futures that are pending again.

        A finished node's output can be lost before it is fetched (its worker died): Dask then
        computes it again, and the node is watched again rather than dropped.
        """
        finished = [(i, f) for i, f in batch if f.status == "finished"]
        if finished:
            try:
                outcomes = await self.client.gather([f for _, f in finished])
            except Exception:  # one of them vanished (cancelled, lost): take them one by one
                outcomes = []
                for _, f in finished:
                    try:
                        outcomes.append(await f if f.status == "finished" else None)
                    except Exception as exc:
                        outcomes.append(exc if f.status in ("error", "cancelled") else None)
            for (node_id, _), outcome in zip(finished, outcomes, strict=True):
                if outcome is not None:  # None: lost meanwhile, watched again below
                    self._node_done(run, node_id, outcome)
        again = []
        for node_id, f in batch:
            if f.status == "error":
                self._node_done(run, node_id, await f.exception())
            elif f.status == "cancelled":
                self._node_done(run, node_id, FutureCancelledError(f.key, "cancelled"))
            elif node_id not in run.done:  # "lost" or "pending": it will be computed again
                again.append((node_id, f))
        for node_id, _ in batch:
            if node_id in run.done:
                run.futures.pop(node_id, None)  # release: Dask may now free the value
        return again

    def _node_done(self, run: DispatchRun, node_id: int, outcome: Any) -> None:
        if node_id in run.done:
            return
        run.done.add(node_id)
        d = run.dispatch_id
        if isinstance(outcome, NodeOutcome):
            self._completed(run, node_id, outcome.data, outcome.start, outcome.end or now_iso(),
                            outcome.stdout, outcome.stderr)
        elif isinstance(outcome, NodeTaskError) and outcome.node_id == node_id:
            detail = outcome.detail or f"{outcome.error_type}: {outcome.message}"
            run.failed[node_id] = f"{outcome.error_type}: {outcome.message}"
            self._record(NodeUpdate(d, node_id, status="FAILED", start_time=outcome.start or None,
                                    end_time=outcome.end or now_iso(), error=detail,
                                    stdout=outcome.stdout, stderr=outcome.stderr))
        elif isinstance(outcome, NodeTaskError | FutureCancelledError | asyncio.CancelledError):
            # A descendant of a failed node never ran (fail-slow): it stays NEW_OBJECT, unless
            # it was cancelled on purpose.
            if run.cancel_requested and node_id in run.cancelled:
                self._record(NodeUpdate(d, node_id, status="CANCELLED", end_time=now_iso()))
        else:
            blamed = getattr(outcome, "task", None)
            if blamed is not None and blamed != run.keys[node_id]:
                return  # e.g. KilledWorker of an ancestor: this node never ran
            msg = f"{type(outcome).__name__}: {outcome}"
            if isinstance(outcome, KilledWorker):
                msg = ("KilledWorker: every Dask worker process that ran this node died (killed, "
                       "crashed, or over its memory limit), so Dask stopped retrying it. " + msg)
            run.failed[node_id] = msg
            self._record(NodeUpdate(d, node_id, status="FAILED", end_time=now_iso(), error=msg))

    def _completed(self, run: DispatchRun, node_id: int, data: bytes, start: str, end: str,
                   stdout: str = "", stderr: str = "") -> None:
        """Record a completed node, then any gathering node it was the last missing part of."""
        run.done.add(node_id)
        if node_id == run.postprocess_id:
            run.result = data
        self._record(NodeUpdate(run.dispatch_id, node_id, status="COMPLETED", start_time=start or None,
                                end_time=end, output=data, stdout=stdout, stderr=stderr))
        if node_id in run.feeds:
            run.parts[node_id] = data
        for child in run.feeds.get(node_id, ()):
            run.missing[child] -= 1
            if run.missing[child] == 0 and child not in run.cancelled:
                self._assemble(run, child)

    def _assemble(self, run: DispatchRun, node_id: int) -> None:
        node = run.graph.nodes[node_id]
        edges = run.gathered_from[node_id]
        parts = [run.parts[e.src] if e.kind != "wait" else None for e in edges]
        extra = run.graph.blobs[node.value] if node.value is not None else None
        layout = tuple((e.kind.value, e.name, e.index) for e in edges)
        data = assembled_bytes(str(node.kind), extra, layout, parts)
        for e in edges:  # drop parts no other gathering node still needs
            run.unused[e.src] -= 1
            if not run.unused[e.src]:
                run.parts.pop(e.src, None)
        stamp = now_iso()
        self._completed(run, node_id, data, stamp, stamp)

    def _finish(self, run: DispatchRun) -> None:
        nodes = run.graph.nodes
        if run.failed:
            status = "FAILED"
            lines = []
            for node_id, msg in sorted(run.failed.items()):
                name = nodes[node_id].name if node_id >= 0 else "dispatcher"
                lines.append(f"Node {node_id} ({name}) failed: {msg}")
            error: str | None = "\n".join(lines)
        elif run.dispatch_id in self.store_failed:
            status = "FAILED"
            error = f"some outputs could not be stored: {self.store_failed.pop(run.dispatch_id)}"
        elif run.cancel_requested:
            status, error = "CANCELLED", None
        else:
            status, error = "COMPLETED", None
        log.info("dispatch %s %s", run.dispatch_id, status)
        self._finished.append(run.dispatch_id)
        self._record(dispatch=DispatchUpdate(run.dispatch_id, status=status, end_time=now_iso(),
                                             error=error, result=run.result))
        self.runs.pop(run.dispatch_id, None)
        run.futures.clear()

    async def cancel(self, dispatch_id: str, node_ids: list[int] | None) -> list[int]:
        """Cancel the unfinished nodes (all, or ``node_ids`` and their descendants)."""
        run = self.runs.get(dispatch_id)
        if run is None:
            return []
        finished = [(i, f) for i, f in run.futures.items() if f.status == "finished"]
        if finished:  # done but not yet recorded: record them, they are not cancelled
            await self._absorb(run, finished)
        if node_ids:
            targets = _descendants(run.graph, node_ids)
        else:
            targets = set(range(len(run.graph.nodes)))
        targets -= run.done
        run.cancel_requested = True
        run.cancelled |= targets
        futs = [run.futures[i] for i in targets if i in run.futures]
        stamp = now_iso()
        for i in sorted(targets):
            self._record(NodeUpdate(dispatch_id, i, status="CANCELLED", end_time=stamp))
        if not node_ids:
            self._record(dispatch=DispatchUpdate(dispatch_id, status="CANCELLED", end_time=stamp))
            self._finished.append(dispatch_id)
        await self.client.cancel(futs, force=True)
        await self._flush()
        return sorted(targets)


class _Completions:
    """The futures of one dispatch, handed out in batches as they complete.

    Pushed, not polled: each future's done-callback (run by Dask in its callback thread) hands
    it to the event loop. ``next_batch`` waits for the first completion, then lets more join
    for up to ``linger`` seconds: each fetch of outputs is a round trip through the scheduler,
    so fetching per node would cost the scheduler more than the node itself. The graph keeps
    running meanwhile; the linger only delays the record, and never at the end: once every
    future has completed the batch goes at once.
    """

    def __init__(self, futures: list[tuple[int, Future[Any]]]) -> None:
        self.loop = asyncio.get_running_loop()
        self.ready: list[tuple[int, Future[Any]]] = []
        self.outstanding = 0  # not yet handed out
        self.event = asyncio.Event()
        self.pending: set[asyncio.Task[None]] = set()
        for item in futures:
            self.watch(item)

    def watch(self, item: tuple[int, Future[Any]]) -> None:
        self.outstanding += 1
        if item[1].status == "lost":  # its output died with a worker; Dask computes it again
            task = asyncio.create_task(self._when_back(item))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)
        else:
            item[1].add_done_callback(lambda _: self.loop.call_soon_threadsafe(self._push, item))

    async def _when_back(self, item: tuple[int, Future[Any]]) -> None:
        try:
            await item[1]  # returns once the future has an outcome again
        except Exception:  # an error is an outcome too: the runner reads it from the future
            pass
        self._push(item)

    def _push(self, item: tuple[int, Future[Any]]) -> None:
        self.ready.append(item)
        self.event.set()

    async def next_batch(self, linger: float, limit: int) -> list[tuple[int, Future[Any]]]:
        while not self.ready:
            self.event.clear()
            await self.event.wait()
        deadline = self.loop.time() + linger
        while len(self.ready) < min(limit, self.outstanding):
            left = deadline - self.loop.time()
            if left <= 0:
                break
            self.event.clear()
            try:
                await asyncio.wait_for(self.event.wait(), left)
            except TimeoutError:
                break
        batch, self.ready = self.ready[:limit], self.ready[limit:]
        self.outstanding -= len(batch)
        return batch


def _descendants(graph: WorkflowGraph, roots: list[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for e in graph.edges:
        children.setdefault(e.src, []).append(e.dst)
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        n = stack.pop()
        if n not in seen:
            seen.add(n)
            stack.extend(children.get(n, ()))
    return seen
