"""Run dispatches on the Dask cluster and record every node's outcome.

Model: a dispatch is submitted as ONE Dask graph (``compile``); the runner owns one
``DispatchRun`` per running dispatch (``tracking``), which holds the Dask futures of its nodes
and what each node still waits for. A future is released as soon as its outcome is recorded,
so Dask frees memory as it would for a plain graph. Outcomes become store updates through the
state machine (``state``) and reach the store through the ``Recorder``; a dispatch's waiters
wake only once its final status is committed, so whatever the API reports is on disk.

Pushed, not polled: completion comes from Dask futures, start times from worker events.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime
from typing import Any

from distributed import Client, Future
from distributed.client import FutureCancelledError
from distributed.scheduler import KilledWorker

from covalent.wire import PARAMETER_PREFIX, NodeKind, WorkflowGraph, gathered_bytes

from . import state
from .compile import Compiled, compile_graph
from .dask_graph import submit_graph
from .errors import IncompatibleClient
from .protocol import (PREVIEW_LIMIT, START_TOPIC, NodeOutcome, NodeTaskError, now_iso,
                       runtime_versions)
from .recorder import Recorder
from .tracking import Completions, DispatchRun, Outcome, Role, descendants, gather_preview
from .worker.contact import ServerContact
from .worker.interrupts import CancelPlugin

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


class Runner:
    """Submits dispatches to Dask and records their outcomes; one per server."""

    def __init__(self, recorder: Recorder, client: Client, public_url: str = "",
                 token: str = "") -> None:
        self.recorder = recorder
        self.client = client
        self.public_url = public_url  # how workers reach this server (sublattices)
        self.token = token
        self.runs: dict[str, DispatchRun] = {}
        self._versions: tuple[float, dict[str, dict[str, str]]] | None = None

    async def start(self) -> None:
        self.client.subscribe_topic(START_TOPIC, self._on_start)
        await self.client.register_plugin(CancelPlugin(), name=CancelPlugin.name)
        await self.tell_workers(self.public_url)

    async def tell_workers(self, url: str) -> None:
        """Give every worker (and every later one) this server's address and token."""
        self.public_url = url
        try:
            await self.client.register_plugin(ServerContact(url, self.token), name=ServerContact.name)
        except Exception as exc:  # the cluster is unreachable: submitting will say so
            log.warning("could not tell the workers this server's address: %s", exc)

    async def close(self) -> None:
        for run in list(self.runs.values()):
            if run.task is not None:
                run.task.cancel()
        await asyncio.gather(*(r.task for r in self.runs.values() if r.task), return_exceptions=True)

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

    # -- running ---------------------------------------------------------------------------

    def _on_start(self, event: tuple[float, dict[str, Any]]) -> None:
        _, msg = event
        if msg.get("d") in self.runs:
            self.recorder.record(state.node_running(msg["d"], int(msg["n"]), msg["t"]))

    async def submit(self, dispatch_id: str, graph: WorkflowGraph,
                     preset: dict[int, tuple[bytes, str, str]], started: str = "") -> None:
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
                futures = submit_graph(self.client, compiled.dsk, list(compiled.tasks.values()),
                                       f"{dispatch_id}-{uuid.uuid4().hex}",
                                       submission_priority(started))
                run.futures = dict(zip(compiled.tasks, futures, strict=True))
        except Exception as exc:
            log.exception("submitting dispatch %s failed", dispatch_id)
            self.runs.pop(dispatch_id, None)
            if futures:
                await self.client.cancel(futures, force=True)
            self.recorder.ended(state.dispatch_not_submitted(
                dispatch_id, f"{type(exc).__name__}: {exc}", now_iso()))
            return
        run.task = asyncio.create_task(self._track(run), name=f"track-{dispatch_id}")
        log.info("dispatch %s submitted: %d nodes, %d tasks, %d reused", dispatch_id,
                 len(graph.nodes), len(compiled.dsk), len(preset))

    def _prepare(self, dispatch_id: str, graph: WorkflowGraph,
                 preset: dict[int, tuple[bytes, str, str]]
                 ) -> tuple[Compiled, DispatchRun, list[state.NodeUpdate | state.DispatchUpdate]]:
        """Compile and plan a dispatch, and what is known before Dask runs anything (pure: it
        runs in a thread, on a DispatchRun nobody else sees yet)."""
        compiled = compile_graph(dispatch_id, graph, preset)
        run = DispatchRun.plan(dispatch_id, graph, compiled.tasks, compiled.inlined, compiled.gathers)
        stamp = now_iso()
        updates: list[state.NodeUpdate | state.DispatchUpdate] = [
            state.dispatch_started(dispatch_id, stamp)]
        for node_id, (data, start, end) in preset.items():
            if node_id not in compiled.inlined:
                updates.append(state.node_completed(dispatch_id, node_id, data, start, end))
        for node_id, data in compiled.inlined.items():
            label = graph.nodes[node_id].name.removeprefix(PARAMETER_PREFIX)[:PREVIEW_LIMIT]
            updates += self._completed(run, node_id, data, start=stamp, end=stamp, preview=label)
        for node_id in compiled.gathers:
            # Gathers nothing (a lattice returning a constant, an empty list); a gathering node
            # whose parents were all inlined was gathered by the loop above.
            if not run.nodes[node_id].waiting_for and not run.nodes[node_id].done:
                updates += self._gather(run, node_id)
        return compiled, run, updates

    async def _track(self, run: DispatchRun) -> None:
        try:
            if run.futures:
                done = Completions(list(run.futures.items()))
                while done.outstanding:
                    batch = await done.next_batch(COALESCE_S, MAX_BATCH)
                    for item in await self._absorb(run, batch):
                        done.watch(item)
            self._finish(run)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never let a tracking bug leave a dispatch RUNNING forever
            log.exception("tracking dispatch %s failed", run.dispatch_id)
            self._finish(run, f"dispatcher error while tracking: {type(exc).__name__}: {exc}")

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
            elif not run.nodes[node_id].done:  # "lost" or "pending": it will be computed again
                again.append((node_id, f))
        for node_id, _ in batch:
            if run.nodes[node_id].done:
                run.futures.pop(node_id, None)  # release: Dask may now free the value
        return again

    def _node_done(self, run: DispatchRun, node_id: int, outcome: Any) -> None:
        track = run.nodes[node_id]
        if track.done:
            return
        d = run.dispatch_id
        if isinstance(outcome, NodeOutcome):
            self.recorder.record(*self._completed(run, node_id, outcome.data, outcome.start,
                                                  outcome.end or now_iso(), outcome.stdout,
                                                  outcome.stderr, outcome.preview))
            return
        if isinstance(outcome, NodeTaskError) and outcome.node_id == node_id:
            track.outcome, track.failed = Outcome.FAILED, f"{outcome.error_type}: {outcome.message}"
            self.recorder.record(state.node_failed(
                d, node_id, outcome.detail or track.failed, outcome.end or now_iso(),
                outcome.start, outcome.stdout, outcome.stderr))
        elif isinstance(outcome, NodeTaskError | FutureCancelledError | asyncio.CancelledError):
            # A descendant of a failed node never ran (fail-slow): it stays NEW_OBJECT, unless
            # it was cancelled on purpose.
            track.outcome = Outcome.SKIPPED
            if run.cancel_requested and track.cancelled:
                self.recorder.record(state.node_cancelled(d, node_id, now_iso()))
        else:
            blamed = getattr(outcome, "task", None)
            if blamed is not None and blamed != track.key:
                track.outcome = Outcome.SKIPPED  # e.g. KilledWorker of an ancestor: never ran
                return
            msg = f"{type(outcome).__name__}: {outcome}"
            if isinstance(outcome, KilledWorker):
                msg = ("KilledWorker: every Dask worker process that ran this node died (killed, "
                       "crashed, or over its memory limit), so Dask stopped retrying it. " + msg)
            track.outcome, track.failed = Outcome.FAILED, msg
            self.recorder.record(state.node_failed(d, node_id, msg, now_iso()))

    def _completed(self, run: DispatchRun, node_id: int, data: bytes, start: str, end: str,
                   stdout: str = "", stderr: str = "", preview: str = "") -> list[state.NodeUpdate]:
        """A completed node, then any gathering node it was the last missing part of: the
        updates to record."""
        track = run.nodes[node_id]
        track.outcome = Outcome.COMPLETED
        if node_id == run.postprocess_id:
            run.result = data
        updates = [state.node_completed(run.dispatch_id, node_id, data, start, end, stdout, stderr,
                                        preview)]
        run.keep_output(node_id, data, preview)
        for child in track.feeds:
            gather = run.nodes[child]
            gather.waiting_for -= 1
            if gather.waiting_for == 0 and not gather.cancelled:
                updates += self._gather(run, child)
        return updates

    def _gather(self, run: DispatchRun, node_id: int) -> list[state.NodeUpdate]:
        node = run.graph.nodes[node_id]
        edges = run.gather_parents[node_id]
        parts = [run.nodes[e.src].output if e.kind != "wait" else None for e in edges]
        extra = run.graph.blobs[node.value] if node.value is not None else None
        layout = tuple((e.kind.value, e.name, e.index) for e in edges)
        data = gathered_bytes(str(node.kind), extra, layout, parts)
        previews = [run.nodes[e.src].preview for e in edges if e.kind != "wait"]
        if node.kind is not NodeKind.POSTPROCESS:  # argument order (edge order may differ)
            args = sorted((e.index or 0, p) for e, p in zip(
                [e for e in edges if e.kind != "wait"], previews, strict=True))
            previews = [p for _, p in args]
        stamp = now_iso()
        updates = self._completed(run, node_id, data, stamp, stamp,
                                  preview=gather_preview(str(node.kind), node.metadata, previews))
        run.release_parts(node_id)
        return updates

    def _finish(self, run: DispatchRun, internal_error: str | None = None) -> None:
        failed = run.failed
        if internal_error is not None:
            failed[-1] = internal_error
        update = state.dispatch_ended(
            run.dispatch_id, failed, [n.name for n in run.graph.nodes], run.cancel_requested,
            now_iso(), run.result, self.recorder.store_failed.pop(run.dispatch_id, None))
        log.info("dispatch %s %s", run.dispatch_id, update.status)
        self.recorder.ended(update)
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
        targets = (descendants(run.graph, node_ids) if node_ids
                   else set(range(len(run.graph.nodes))))
        targets = {i for i in targets if not run.nodes[i].done}
        run.cancel_requested = True
        stamp = now_iso()
        for i in sorted(targets):
            track = run.nodes[i]
            if not track.cancelled and track.role is Role.GATHER:
                run.release_parts(i)  # it will never be gathered
            track.cancelled = True
            self.recorder.record(state.node_cancelled(dispatch_id, i, stamp))
        if not node_ids:
            self.recorder.ended(state.dispatch_cancelled(dispatch_id, stamp))
        await self.client.cancel([run.futures[i] for i in targets if i in run.futures], force=True)
        await self.recorder.flush()
        return sorted(targets)
