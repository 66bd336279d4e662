"""Run dispatches on the Dask cluster and record every node's outcome, pushed by the workers.

Model: a dispatch is submitted as ONE Dask graph (``compile``). Each worker reports how each
node ended by an *outcome event* (``protocol``), with its output stored by the worker itself:
the runner never fetches a task's result, so outputs never pass through the dispatcher. The
events reach the runner without a network hop from the embedded scheduler (a scheduler plugin
on this same loop), or through a topic subscription from an external scheduler.

The runner holds Dask futures only for each dispatch's sinks (``tracking``); when they are all
done, every task has ended, and the events that say how were delivered first (a worker logs
its event before its task completes, on the same stream). Events and sink completions go
through one inbox, processed in arrival order. Outcomes become store updates through the state
machine (``state``) and reach the store through the ``Recorder``; a dispatch's waiters wake only
once its final status is committed, so whatever the API reports is on disk.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import logging
import uuid
from datetime import datetime
from typing import Any

from distributed import Client, Future
from distributed.client import FutureCancelledError
from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.scheduler import KilledWorker, NoValidWorkerError

from covalent.wire import PARAMETER_PREFIX, NodeKind, WorkflowGraph

from . import state
from .compile import Compiled, Preset, compile_graph
from .dask_graph import cancel as cancel_futures
from .dask_graph import hold, submit_graph, wait_all
from .errors import IncompatibleClient, UnknownExecutor
from .executors import ExecutorTable
from .protocol import OUTCOME_TOPIC, PREVIEW_LIMIT, START_TOPIC, NodeTaskError, now_iso, runtime_versions
from .recorder import Recorder
from .tracking import DispatchRun, Outcome, Role, descendants, gather_preview
from .worker.contact import WorkerContext
from .worker.interrupts import CancelPlugin

log = logging.getLogger("covalent.dispatcher")

VERSIONS_TTL_S = 30.0  # how long the workers' Python/cloudpickle versions are trusted
Update = state.NodeUpdate | state.DispatchUpdate


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


class OutcomePlugin(SchedulerPlugin):
    """In the embedded scheduler (same process, same loop): hand every outcome and start event
    to the runner as the scheduler receives it, without serialising it again."""

    name = "covalent-outcomes"

    def __init__(self, deliver: Any) -> None:
        self.deliver = deliver

    def log_event(self, topic: str, msg: Any) -> None:
        if topic in (OUTCOME_TOPIC, START_TOPIC):
            self.deliver(topic, msg)


class Runner:
    """Submits dispatches to Dask and records their outcomes; one per server."""

    def __init__(self, recorder: Recorder, client: Client, *, store_root: str,
                 storage_options: dict[str, Any] | None = None, scheduler: Any = None,
                 public_url: str = "", token: str = "", executors: ExecutorTable | None = None,
                 time_limit_grace: float = 10.0) -> None:
        self.recorder = recorder
        self.client = client
        self.executors = executors or ExecutorTable()
        self.time_limit_grace = time_limit_grace
        self.scheduler = scheduler  # the embedded, in-process Scheduler; None for an external one
        self.store_root = store_root
        self.storage_options = storage_options or {}
        self.public_url = public_url  # how workers reach this server (sublattices)
        self.token = token
        self.runs: dict[str, DispatchRun] = {}
        self._inbox: collections.deque[tuple[str, Any]] = collections.deque()
        self._wake = asyncio.Event()
        self._drainer: asyncio.Task[None] | None = None
        self._versions: tuple[float, dict[str, dict[str, str]]] | None = None

    async def start(self) -> None:
        if self.scheduler is not None:
            self.scheduler.add_plugin(OutcomePlugin(self._deliver), name=OutcomePlugin.name)
        else:
            for topic in (OUTCOME_TOPIC, START_TOPIC):
                self.client.subscribe_topic(topic, lambda ev, t=topic: self._deliver(t, ev[1]))
        await self.client.register_plugin(CancelPlugin(), name=CancelPlugin.name)
        await self.tell_workers(self.public_url)
        self._drainer = asyncio.create_task(self._drain(), name="covalent-outcomes")

    async def tell_workers(self, url: str) -> None:
        """Give every worker (and every later one) this server's address, token and store."""
        self.public_url = url
        context = WorkerContext(url, self.token, self.store_root, self.storage_options,
                                self.time_limit_grace)
        try:
            await self.client.register_plugin(context, name=WorkerContext.name)
        except Exception as exc:  # the cluster is unreachable: submitting will say so
            log.warning("could not set up the workers: %s", exc)

    async def close(self) -> None:
        waiters = [r.waiter for r in self.runs.values() if r.waiter is not None]
        for w in waiters:
            w.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
        if self._drainer is not None:
            self._drainer.cancel()
            await asyncio.gather(self._drainer, return_exceptions=True)
        if self.scheduler is not None:
            self.scheduler.remove_plugin(name=OutcomePlugin.name)

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

    # -- submitting ------------------------------------------------------------------------

    async def submit(self, dispatch_id: str, graph: WorkflowGraph, preset: dict[int, Preset],
                     started: str = "") -> None:
        """Compile the dispatch into one Dask graph, submit it and start tracking it.

        ``started`` (ISO time its root dispatch started) orders the tasks of concurrent
        dispatches: earlier ones run first, so a burst of later dispatches never starves them.
        All or nothing: if anything fails before the graph is running, the dispatch is
        recorded FAILED with the reason (never left RUNNING without a tracker).
        """
        futures: list[Future[Any]] = []
        try:
            # Off the loop: a 100,000-node graph takes seconds to compile and plan (issue #13).
            compiled, run, updates = await asyncio.to_thread(self._prepare, dispatch_id, graph, preset)
            self.runs[dispatch_id] = run
            self.recorder.record(*updates)
            if compiled.dsk:
                keys = [compiled.tasks[i] for i in compiled.sinks]
                # In a thread: Dask pickles the whole graph here (seconds for 100,000 tasks);
                # the client sends it from its loop.
                futures = await asyncio.to_thread(
                    submit_graph, self.client, compiled.dsk, keys,
                    f"{dispatch_id}-{uuid.uuid4().hex}", submission_priority(started),
                    compiled.options)
                run.sinks = dict(zip(compiled.sinks, futures, strict=True))
                if run.cancel_requested:  # cancelled while the graph was on its way
                    await cancel_futures(self.client, [f for i, f in run.sinks.items()
                                                       if run.nodes[i].cancelled])
        except Exception as exc:
            self.runs.pop(dispatch_id, None)
            if futures:
                await cancel_futures(self.client, futures)
            stamp = now_iso()
            if isinstance(exc, UnknownExecutor):  # the user's to fix: no traceback in the log
                log.warning("dispatch %s not run: %s", dispatch_id, exc)
                self.recorder.record(*(state.node_failed(dispatch_id, i, f"UnknownExecutor: {exc}",
                                                         stamp) for i in exc.node_ids))
            else:
                log.exception("submitting dispatch %s failed", dispatch_id)
            reason = str(exc) if isinstance(exc, UnknownExecutor) else f"{type(exc).__name__}: {exc}"
            self.recorder.ended(state.dispatch_not_submitted(dispatch_id, reason, stamp))
            return
        run.waiter = asyncio.create_task(self._await_sinks(run), name=f"sinks-{dispatch_id}")
        log.info("dispatch %s submitted: %d nodes, %d tasks, %d reused", dispatch_id,
                 len(graph.nodes), len(compiled.dsk), len(preset))

    def _prepare(self, dispatch_id: str, graph: WorkflowGraph, preset: dict[int, Preset]
                 ) -> tuple[Compiled, DispatchRun, list[Update]]:
        """Compile and plan a dispatch, and what is known before Dask runs anything (pure: it
        runs in a thread, on a DispatchRun nobody else sees yet)."""
        options = self.executors.resolve(graph)  # UnknownExecutor: nothing runs
        compiled = compile_graph(dispatch_id, graph, preset, options)
        run = DispatchRun.plan(dispatch_id, graph, compiled.tasks, compiled.inlined, compiled.gathers)
        for node_id, opts in options.items():
            run.nodes[node_id].retries = opts.retries
        stamp = now_iso()
        updates: list[Update] = [state.dispatch_started(dispatch_id, stamp)]
        for node_id, known in preset.items():
            updates.append(state.node_completed(dispatch_id, node_id, known.inline, known.start,
                                                known.end, ref=known.ref, size=known.size,
                                                reused_from=known.reused_from))
            updates += self._completed(run, node_id, known.preview)
        for node_id, data in compiled.inlined.items():
            if node_id in preset:
                continue
            label = graph.nodes[node_id].name.removeprefix(PARAMETER_PREFIX)[:PREVIEW_LIMIT]
            updates.append(state.node_completed(dispatch_id, node_id, data, stamp, stamp,
                                                preview=label))
            updates += self._completed(run, node_id, label)
        for node_id in compiled.gathers:
            # Gathers nothing (a lattice returning a constant, an empty list); a gathering node
            # whose parts were all known was gathered by the loops above.
            if not run.nodes[node_id].waiting_for and not run.nodes[node_id].done:
                updates += self._gather(run, node_id)
        return compiled, run, updates

    # -- what the workers report -------------------------------------------------------------

    def _deliver(self, topic: str, msg: Any) -> None:
        """Queue an event (or a dispatch whose sinks are all done) for ``_drain``, in order."""
        self._inbox.append((topic, msg))
        self._wake.set()

    async def _drain(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            handled = 0
            while self._inbox:
                handled += 1
                if handled % 256 == 0:
                    await asyncio.sleep(0)  # a burst of 100,000 events must not hold the loop
                topic, msg = self._inbox.popleft()
                try:
                    if topic == OUTCOME_TOPIC:
                        self._on_outcome(msg)
                    elif topic == START_TOPIC:
                        if msg.get("d") in self.runs:
                            self.recorder.record(state.node_running(msg["d"], int(msg["n"]), msg["t"]))
                    else:
                        await self._finish(msg)
                except asyncio.CancelledError:
                    raise
                except Exception:  # one bad event must not stop the others
                    log.exception("could not process %s event %r", topic, msg)

    def _on_outcome(self, msg: dict[str, Any]) -> None:
        run = self.runs.get(msg.get("d", ""))
        if run is None:
            return  # a dispatch that already ended (cancelled) or was resumed anew
        node_id = int(msg["n"])
        if node_id in run.held:
            run.held[node_id][1].set()
        track = run.nodes[node_id]
        if track.done or track.cancelled:
            return  # a node run again after its worker died reports again: recorded once
        d = run.dispatch_id
        track.attempts += 1
        if msg["s"] == "COMPLETED":
            self.recorder.record(state.node_completed(
                d, node_id, msg.get("data"), msg["t0"], msg["t1"], msg["out"], msg["err"],
                msg.get("pv"), ref=msg.get("ref"), size=msg.get("size"), location=msg.get("loc"),
                attempts=track.attempts))
            self.recorder.record(*self._completed(run, node_id, msg.get("pv") or ""))
        elif track.attempts <= track.retries:  # Dask runs it again (its executor's retries)
            log.info("node %d of dispatch %s failed (attempt %d of %d), retrying: %s: %s",
                     node_id, d, track.attempts, track.retries + 1, msg["et"], msg["msg"])
            self.recorder.record(state.node_retrying(d, node_id, track.attempts))
        else:
            tries = f" (failed {track.attempts} attempts)" if track.attempts > 1 else ""
            track.outcome, track.failed = Outcome.FAILED, f"{msg['et']}: {msg['msg']}{tries}"
            self.recorder.record(state.node_failed(
                d, node_id, msg.get("tb") or track.failed, msg["t1"], msg["t0"], msg["out"],
                msg["err"], attempts=track.attempts))

    def _completed(self, run: DispatchRun, node_id: int, preview: str) -> list[state.NodeUpdate]:
        """Mark a node COMPLETED; return the updates of the gathering nodes it completes."""
        track = run.nodes[node_id]
        track.outcome, track.preview = Outcome.COMPLETED, preview
        updates: list[state.NodeUpdate] = []
        for child in track.feeds:
            gather = run.nodes[child]
            gather.waiting_for -= 1
            if gather.waiting_for == 0 and not gather.cancelled:
                updates += self._gather(run, child)
        return updates

    def _gather(self, run: DispatchRun, node_id: int) -> list[state.NodeUpdate]:
        """Record a gathering node as the list of its parts (no bytes: the parts are stored)."""
        node = run.graph.nodes[node_id]
        edges = run.gather_parents[node_id]
        spec: dict[str, Any] = {"kind": str(node.kind), "parts": [e.src for e in edges],
                                "layout": [[e.kind.value, e.name, e.index] for e in edges]}
        if node.kind is NodeKind.DICT and node.value is not None:  # the keys (small), pickled
            spec["extra"] = base64.b64encode(run.graph.blobs[node.value]).decode()
        previews = [run.nodes[e.src].preview for e in edges if e.kind != "wait"]
        if node.kind is not NodeKind.POSTPROCESS:  # argument order (edge order may differ)
            args = [e for e in edges if e.kind != "wait"]
            previews = [p for _, p in sorted(zip([e.index or 0 for e in args], previews, strict=True))]
        shown = gather_preview(str(node.kind), node.metadata, previews)
        update = state.node_gathered(run.dispatch_id, node_id, json.dumps(spec), now_iso(), shown)
        return [update, *self._completed(run, node_id, shown)]

    # -- the end of a dispatch ---------------------------------------------------------------

    async def _await_sinks(self, run: DispatchRun) -> None:
        """Wait until every sink is done, then queue the dispatch's end behind the events that
        came before."""
        try:
            await wait_all(list(run.sinks.values()))
            await self._await_held(run)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never leave a dispatch RUNNING because waiting failed
            log.exception("waiting for dispatch %s failed", run.dispatch_id)
            run.internal_error = f"dispatcher error while waiting: {type(exc).__name__}: {exc}"
        self._deliver("ended", run.dispatch_id)

    async def _await_held(self, run: DispatchRun) -> None:
        """Wait for the tasks held for cancelled nodes: each until its future ends or its
        outcome arrives (a key Dask released just before it was held never reports again)."""
        while True:
            waiting = [(f, ev) for f, ev in run.held.values()
                       if not ev.is_set() and f.status in ("pending", "lost")]
            if not waiting:
                return
            future, reported = waiting[0]
            either = [asyncio.ensure_future(wait_all([future])),
                      asyncio.ensure_future(reported.wait())]
            try:
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in either:
                    t.cancel()

    async def _finish(self, dispatch_id: str) -> None:
        run = self.runs.get(dispatch_id)
        if run is None:
            return
        await self._explain_failures(run)
        failed = run.failed
        if run.internal_error:
            failed[-1] = run.internal_error
        update = state.dispatch_ended(
            dispatch_id, failed, [n.name for n in run.graph.nodes], run.cancel_requested,
            now_iso(), None, self.recorder.store_failed.pop(dispatch_id, None))
        log.info("dispatch %s %s", dispatch_id, update.status)
        self.recorder.ended(update)
        self.runs.pop(dispatch_id, None)
        # Releasing a future sends a message per key: let go of 100,000 in slices.
        sinks = list(run.sinks.values())
        run.sinks.clear()
        run.held.clear()
        while sinks:
            del sinks[-1000:]
            await asyncio.sleep(0)

    async def _explain_failures(self, run: DispatchRun) -> None:
        """Nodes that failed without an event (their worker died every time): read the sink's
        error, which names the task Dask gave up on; one per group of descendants."""
        held = {i: f for i, (f, _) in run.held.items()}
        futures = [*run.sinks.items(), *held.items()]
        erred: list[tuple[int, Future[Any]]] = []
        for start in range(0, len(futures), 5000):  # 100,000 sinks: in slices, sharing the loop
            erred += [(i, f) for i, f in futures[start:start + 5000]
                      if f.status == "error" and not run.nodes[i].done]
            await asyncio.sleep(0)
        if not erred:
            return  # the usual case: no graph walk (100,000 nodes) on the loop
        blocked = descendants(run.graph, list(run.failed))
        for node_id, future in erred:
            if node_id in blocked:
                continue
            exc = await future.exception()
            blamed = getattr(exc, "task", None)
            culprit = run.by_key.get(blamed, node_id) if isinstance(blamed, tuple) else node_id
            if isinstance(exc, NodeTaskError):
                culprit, msg = exc.node_id, f"{exc.error_type}: {exc.message}"
            elif isinstance(exc, NoValidWorkerError):
                needs = ", ".join(f"{k}={v:g}" for k, v in (exc.resource_restrictions or {}).items())
                pins = ", ".join(sorted(exc.worker_restrictions or ()) + sorted(exc.host_restrictions or ()))
                msg = (f"NoValidWorker: no worker of the cluster can run this node (it needs "
                       f"{'resources ' + needs if needs else ''}{' and ' if needs and pins else ''}"
                       f"{'one of the workers ' + pins if pins else ''}) and none came within "
                       f"{exc.timeout:g} s; start a worker that has them (dask worker "
                       f"--resources {needs.replace(', ', ',') or 'NAME=1'}) or change the executor")
            elif isinstance(exc, KilledWorker):
                msg = ("KilledWorker: every Dask worker process that ran this node died (killed, "
                       "crashed, or over its memory limit), so Dask stopped retrying it. "
                       f"KilledWorker: {exc}")
            elif isinstance(exc, FutureCancelledError | asyncio.CancelledError):
                continue
            else:
                msg = f"{type(exc).__name__}: {exc}"
            track = run.nodes[culprit]
            if not track.done:
                track.outcome, track.failed = Outcome.FAILED, msg
                self.recorder.record(state.node_failed(run.dispatch_id, culprit, msg, now_iso()))
            blocked |= descendants(run.graph, [culprit])
        for i, track in enumerate(run.nodes):
            if not track.done and i in blocked:
                track.outcome = Outcome.SKIPPED  # never ran (fail-slow): stays NEW_OBJECT

    def _keep_upstream(self, run: DispatchRun, targets: set[int]) -> None:
        """Before cancelling some nodes: hold the unfinished tasks that feed them, so Dask does
        not release them with their consumers; they run to the end and the dispatch ends
        after them, as Covalent's do (only the cancelled nodes and their descendants stop)."""
        parents = run.graph.parents()
        keep: set[int] = set()
        stack = [e.src for t in targets for e in parents[t]]
        while stack:
            i = stack.pop()
            track = run.nodes[i]
            if i in targets or i in keep or track.done:
                continue
            if track.role is Role.TASK:
                keep.add(i)
            else:  # a gathering node has no task: its parts are what its consumer needs
                stack.extend(e.src for e in parents[i])
        ids = sorted(keep - set(run.sinks) - set(run.held))
        futures = hold(self.client, [run.nodes[i].key for i in ids]) if ids else []
        for i, future in zip(ids, futures, strict=True):
            run.held[i] = (future, asyncio.Event())

    async def cancel(self, dispatch_id: str, node_ids: list[int] | None) -> list[int]:
        """Cancel the unfinished nodes (all, or ``node_ids`` and their descendants)."""
        run = self.runs.get(dispatch_id)
        if run is None:
            return []
        targets = (descendants(run.graph, node_ids) if node_ids
                   else set(range(len(run.graph.nodes))))
        targets = {i for i in targets if not run.nodes[i].done}
        run.cancel_requested = True
        stamp = now_iso()
        for n, i in enumerate(sorted(targets), 1):
            run.nodes[i].cancelled = True
            self.recorder.record(state.node_cancelled(dispatch_id, i, stamp))
            if n % 2000 == 0:
                await asyncio.sleep(0)  # 100,000 of these would hold the loop for a second
        if not node_ids:
            self.recorder.ended(state.dispatch_cancelled(dispatch_id, stamp))
        elif run.waiter is not None and not run.waiter.done():
            self._keep_upstream(run, targets)
        doomed = [f for i, f in run.sinks.items() if i in targets]
        for i, (future, reported) in run.held.items():
            if i in targets:
                doomed.append(future)
                reported.set()  # nothing more to wait for
        await cancel_futures(self.client, doomed)
        await self.recorder.flush()
        # These may be the last references (the run may have ended meanwhile): releasing a
        # future sends a message per key, so let go of 100,000 in slices, not all at once.
        while doomed:
            del doomed[-1000:]
            await asyncio.sleep(0)
        return sorted(targets)
