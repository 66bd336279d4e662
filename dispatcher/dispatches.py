"""Create, start, resume, cancel and delete dispatches: the operations behind the routes
(reading them: ``reads``).

The server handles only JSON and opaque blobs here; user objects stay pickled. Statuses are
decided by ``state``; writes go to the store (durable facts the API answers with) or through
the runner's recorder (progress).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from covalent import wire
from covalent.wire import GATHER_KINDS, NodeKind, WorkflowGraph, clean_text

from . import state
from .compile import INLINE_PARAMETER_MAX, Preset, validate
from .executors import check_options
from .errors import (DispatcherError, DispatchNotFound, DispatchState, InvalidRequest,
                     NodeNotFound, NotRunningHere, Unavailable)
from .offload import off_loop
from .protocol import now_iso
from .reuse import presets, reusable_outputs
from .runner import Runner
from .state import PENDING, Status
from .store import DispatchExists, DispatchRecord, DispatchStore, NewDispatch, StoredBlob, blob_ref
from .store.leases import dispatch_resource
from .store.base import BUILTIN_OWNER
from .upload import Upload

T = TypeVar("T")

log = logging.getLogger("covalent.dispatcher")

_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def check_id(dispatch_id: str) -> str:
    """Reject anything that is not a dispatch id (a uuid) before it reaches the store (the
    whole string: ``$`` would let a trailing newline through, issue #21)."""
    if not isinstance(dispatch_id, str) or not _ID.fullmatch(dispatch_id):
        raise DispatchNotFound(dispatch_id)
    return dispatch_id


def spoolable(header: dict[str, Any]) -> set[int]:
    """Blob indices a submission may have written to disk as they arrived: parameter values,
    the inputs and the lattice (the server never needs them in memory)."""
    graph = header.get("graph")
    nodes = graph.get("nodes") if isinstance(graph, dict) else None
    out = {header.get("inputs"), header.get("lattice")}
    if isinstance(nodes, list):
        out |= {n.get("value") for n in nodes
                if isinstance(n, dict) and n.get("kind") == str(NodeKind.PARAMETER)}
    return {i for i in out if type(i) is int}


def size_of(upload: Upload) -> int:
    """How many nodes a submission says it has (0 when it says nothing sensible)."""
    graph = upload.header.get("graph")
    nodes = graph.get("nodes") if isinstance(graph, dict) else None
    return len(nodes) if isinstance(nodes, list) else 0


def parse_submission(upload: Upload) -> tuple[dict[str, Any], WorkflowGraph]:
    """Check a dispatch request read by ``upload.read_frame``; raises InvalidRequest with the
    reason. The graph's blobs are ``upload.blobs`` (a spooled blob's place holds ``b""``)."""
    header, blobs = upload.header, upload.blobs
    try:
        check_id(header["dispatch_id"])
        if not isinstance(header.get("name", ""), str):
            raise TypeError("name must be a string")
        if not isinstance(header.get("disable_run", False), bool):
            raise TypeError("disable_run must be true or false")
        graph = WorkflowGraph.from_json(header["graph"], blobs)
        for field in ("inputs", "lattice"):
            idx = header.get(field)
            if not isinstance(idx, int) or isinstance(idx, bool) or not 0 <= idx < len(blobs):
                raise ValueError(f"{field} must index a blob")
        for node in graph.nodes:
            used = [node.fn, node.hooks] + ([] if node.kind is NodeKind.PARAMETER else [node.value])
            if any(i in upload.spooled for i in used if i is not None):
                raise ValueError(f"node {node.id} uses a blob also sent as a value")
    except DispatchNotFound:
        raise InvalidRequest("dispatch_id must be a uuid4 string") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidRequest(f"malformed dispatch: {type(exc).__name__}: {exc}") from None
    if not graph.nodes:
        raise InvalidRequest("the graph has no nodes")
    if graph.nodes[-1].value in upload.spooled:
        raise InvalidRequest("malformed dispatch: the result template is sent as a value")
    validate(graph)
    check_options(graph)
    return header, graph


def stored_parameters(graph: WorkflowGraph, stored: dict[int, StoredBlob], now: str
                      ) -> dict[int, Preset]:
    """Parameters too large to ride inside their consumers' tasks: known outputs from the
    start, read from the blob store by the workers that need them (never sent through Dask).
    ``stored`` holds blobs already on disk by index; others are hashed here."""
    out = {}
    for node in graph.nodes:
        if node.kind is not NodeKind.PARAMETER or node.value is None:
            continue
        blob = stored.get(node.value)
        if blob is None:
            data = graph.blobs[node.value]
            if len(data) <= INLINE_PARAMETER_MAX:
                continue
            blob = StoredBlob(blob_ref(data), len(data))
        label = node.name.removeprefix(wire.PARAMETER_PREFIX)[: wire.PREVIEW_LIMIT]
        out[node.id] = Preset(None, blob.ref, blob.size, now, now, label)
    return out


async def create(store: DispatchStore, runner: Runner, header: dict[str, Any], graph: WorkflowGraph,
                 blobs: list[bytes], *, stored: dict[int, StoredBlob] | None = None,
                 parent: tuple[str, int] | None = None,
                 reuse_from: str | None = None, redispatch_of: str | None = None,
                 owner: str = BUILTIN_OWNER, graph_text: str | None = None) -> tuple[str, bool]:
    """Store a dispatch and start it unless ``disable_run``; returns (id, created).

    ``stored`` = blobs (by index) the store is not handed as bytes: files written as the
    request arrived, or blobs it holds already. ``parent`` = (dispatch id, node id) of the
    sublattice node this dispatch runs for. ``redispatch_of``: the dispatch this one runs again
    (shown in the web UI; ``reuse_from`` implies it); a child belongs to its parent's owner.
    ``graph_text``: the JSON ``graph`` was parsed from, stored as it is. The dispatch is
    stored RUNNING when it will run, in the same transaction as its graph: the 201 is sent
    only once it is on disk in a state that resume picks up (issue #11).
    """
    stored = stored or {}
    dispatch_id = header["dispatch_id"]
    now = now_iso()
    run = not header.get("disable_run")
    root, root_start = dispatch_id, now
    if parent is not None:
        prow = await store.get_dispatch(parent[0])
        if prow is None:
            raise DispatchNotFound(parent[0])
        root, owner = prow.root_dispatch_id, prow.owner
        root_row = prow if root == parent[0] else await store.get_dispatch(root)
        root_start = (root_row or prow).start_time or now  # a child runs in its root's turn
    # Everything that can refuse the request happens before the dispatch is stored.
    preset = await off_loop(len(graph.nodes), stored_parameters, graph, stored, now)
    if run and reuse_from:
        refs = [stored[i].ref if i in stored else blob_ref(b) for i, b in enumerate(blobs)]
        preset.update(await reusable_outputs(store, graph, refs, reuse_from))
    post = graph.nodes[-1]
    # The graph as the client sent it (``graph_text``, what ``graph`` was parsed from), else
    # encoded off the loop and a member at a time: the JSON of a 100,000-node graph takes a
    # second or two, which one C call would spend holding the GIL.
    graph_json = graph_text if graph_text is not None else await off_loop(
        len(graph.nodes), lambda: wire.pieces.dumps(graph.to_json()))
    new = NewDispatch(
        dispatch_id=dispatch_id, root_dispatch_id=root, name=header.get("name") or "lattice",
        status=Status.RUNNING if run else PENDING, created_at=now, start_time=now if run else None,
        graph_json=graph_json,
        nodes=[(n.id, n.name, str(n.kind)) for n in graph.nodes],
        parent_dispatch_id=parent[0] if parent else None,
        parent_node_id=parent[1] if parent else None, owner=owner,
        meta={"client": header.get("client", {}), "redispatch_of": redispatch_of or reuse_from,
              "reused_results": reuse_from is not None, **_shown(header)})
    merged: list[bytes | StoredBlob] = [stored.get(i, b) for i, b in enumerate(blobs)]
    extra = {"inputs_ref": merged[header["inputs"]], "lattice_ref": merged[header["lattice"]]}
    if post.value is not None:
        extra["template_ref"] = merged[post.value]
    epoch = await lease(runner, dispatch_id) if run else 0  # replicas: before it is stored
    # Its machine and first Dask graph are made while it is stored (in threads, for a large
    # graph), used only if it is stored and this server runs it.
    preparing = _background(runner.prepare(dispatch_id, graph, preset)) if run and epoch >= 0 else None
    try:
        await store.create_dispatch(new, merged, extra)
    except DispatchExists:  # a retried request (the same): the dispatch exists already
        await unlease(runner, dispatch_id, epoch)
        await _same_as_stored(store, dispatch_id, graph_json, merged, parent)
        return dispatch_id, False
    except BaseException:  # nothing stored (a 503 the client retries): hold no lease on it,
        await unlease(runner, dispatch_id, epoch)  # or the retry finds it held and never runs it
        raise
    if parent is not None:
        await store.set_sub_dispatch(parent[0], parent[1], dispatch_id)
        if run and epoch >= 0 and await _parent_stopped(store, parent):
            # Its parent node was cancelled (or its dispatch ended) while this was on its way:
            # that cancel read the parent's children before this one was among them, so it
            # ends here, CANCELLED and never run (no child runs on below a cancelled node).
            await _cancel_records(store, runner, dispatch_id, graph)
            await unlease(runner, dispatch_id, epoch)
            if runner.notices is not None:  # the parent's cancel may have passed one on
                await runner.notices.answer_ended(dispatch_id, Status.CANCELLED)
            return dispatch_id, True
    if preparing is not None:  # -1: another replica holds it (and runs it)
        await runner.submit(dispatch_id, graph, preset, root_start, epoch=epoch,
                            prepared=await preparing)
        if runner.notices is not None:  # a cancel another replica took before it ran here
            _background(runner.notices.handle(dispatch_id))
    return dispatch_id, True


def _background(coro: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
    """``coro`` running meanwhile. Its failure reaches whoever awaits it; left unawaited (the
    dispatch was not stored, or not run here), it is dropped without asyncio's warning."""
    task = asyncio.ensure_future(coro)
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    return task


async def _parent_stopped(store: DispatchStore, parent: tuple[str, int]) -> bool:
    """Whether the node a child dispatch runs for is cancelled, or its dispatch ended, as
    the store has it now (read after the child is recorded as the node's)."""
    status = await store.get_status(parent[0])
    if status is None or state.is_terminal(status):
        return True
    node = await store.get_node(parent[0], parent[1])
    return node is None or node.status == Status.CANCELLED


async def _same_as_stored(store: DispatchStore, dispatch_id: str, graph_json: str,
                          blobs: list[bytes | StoredBlob],
                          parent: tuple[str, int] | None = None) -> None:
    """409 unless the stored dispatch ``dispatch_id`` has this graph and these blobs: an id
    reused for another workflow is never silently answered with the first (issue #21).

    A sublattice's child sent again for the same ``parent`` node (that node ran again: its
    worker died, the dispatcher restarted) is that child whatever its bytes: its id derives from
    the node, and a worker may pickle the same lattice otherwise (a function sent by value
    carries the module state it refers to, which a new worker process need not share). The
    node then waits for the child it started first, as it would for the same bytes."""
    row = await store.get_dispatch(dispatch_id)
    if row is not None and parent is not None and (
            row.parent_dispatch_id, row.parent_node_id) == parent:
        return
    refs = await asyncio.to_thread(
        lambda: [b.ref if isinstance(b, StoredBlob) else blob_ref(b) for b in blobs])
    if row is None or row.blob_refs != refs or (row.graph_json != graph_json and await (
            asyncio.to_thread(lambda: json.loads(row.graph_json) != json.loads(graph_json)))):
        # (the same graph written otherwise: as sent, or as encoded by an older server)
        raise DispatchState(f"dispatch id {dispatch_id} is taken by a different workflow or "
                            "inputs; a new dispatch needs a new id")


def _shown(header: dict[str, Any]) -> dict[str, Any]:
    """What the SDK sends only for people to look at (sources, input previews), bounded."""
    sources = header.get("sources")
    inputs = header.get("inputs_preview")
    out: dict[str, Any] = {}
    if isinstance(sources, dict):
        out["sources"] = {str(k)[:64]: clean_text(v, 20_000) for k, v in list(sources.items())[:500]
                          if isinstance(v, str)}
    if isinstance(header.get("lattice_source"), str):
        out["lattice_source"] = clean_text(header["lattice_source"], 20_000)
    if isinstance(inputs, dict):
        args, kwargs = inputs.get("args"), inputs.get("kwargs")
        out["inputs_preview"] = {
            "args": [clean_text(str(a), 1000) for a in args[:100]] if isinstance(args, list) else [],
            "kwargs": ({str(k)[:200]: clean_text(str(v), 1000) for k, v in list(kwargs.items())[:100]}
                       if isinstance(kwargs, dict) else {})}
    return out


async def lease(runner: Runner, dispatch_id: str) -> int:
    """Replicas: take the lease of a dispatch about to run here; its epoch, -1 if another
    replica holds it; 0 for a server alone on its database."""
    if runner.replica is None:
        return 0
    return await runner.replica.acquire(dispatch_resource(dispatch_id)) or -1


async def unlease(runner: Runner, dispatch_id: str, epoch: int) -> None:
    if runner.replica is not None and epoch > 0:
        await runner.replica.release(dispatch_resource(dispatch_id))


async def start_pending(store: DispatchStore, runner: Runner, dispatch_id: str) -> bool:
    """Start a dispatch stored with ``disable_run``; True if this call started it.

    The store marks it RUNNING only if it is still NEW_OBJECT (one transaction), so concurrent
    starts (two ``/start`` calls, a ``/start`` racing a trigger) run it once.
    """
    if await store.get_status(check_id(dispatch_id)) is None:
        raise DispatchNotFound(dispatch_id)
    epoch = await lease(runner, dispatch_id)
    try:
        claimed = epoch >= 0 and await store.claim_pending(dispatch_id, now_iso())
    except BaseException:
        await unlease(runner, dispatch_id, epoch)
        raise
    if not claimed:
        await unlease(runner, dispatch_id, epoch)
        return False  # started already (or finished)
    row = await store.get_dispatch(dispatch_id)
    assert row is not None
    graph, stored = await load_graph(store, row)
    preset = stored_parameters(graph, stored, row.start_time or now_iso())
    await runner.submit(dispatch_id, graph, preset, row.start_time or "", epoch=epoch)
    return True


async def clone(store: DispatchStore, runner: Runner, row: DispatchRecord,
                new_id: str | None = None) -> str:
    """Run a stored dispatch again, server-side, as a new dispatch of its owner (#26) with the
    same inputs (``new_id``: a trigger fire's own id, so that one fire makes one dispatch)."""
    graph, stored = await load_graph(store, row)
    assert row.inputs_ref and row.lattice_ref
    sources = await store.blob_sources([row.inputs_ref, row.lattice_ref])
    blobs = list(graph.blobs)
    header: dict[str, Any] = {"dispatch_id": new_id or str(uuid.uuid4()), "name": row.name,
                              "inputs": len(blobs), "lattice": len(blobs) + 1,
                              # what the page shows of it: the same inputs and sources as the original's
                              **{k: row.meta[k] for k in ("sources", "lattice_source",
                                                          "inputs_preview") if k in row.meta}}
    for ref in (row.inputs_ref, row.lattice_ref):
        stored[len(blobs)] = StoredBlob(ref, sources[ref].size)
        blobs.append(b"")
    new_id, _ = await create(store, runner, header, graph, blobs, stored=stored,
                             redispatch_of=row.dispatch_id, owner=row.owner)
    return new_id


async def load_graph(store: DispatchStore, row: DispatchRecord
                     ) -> tuple[WorkflowGraph, dict[int, StoredBlob]]:
    """A stored dispatch's graph, without reading its large parameter values: those blobs'
    places hold ``b""`` and they are returned by index (workers read them from the store)."""
    # Off the loop, the parse included (``row.graph`` parses): a 100,000-node graph takes
    # seconds, over 10 on a loaded machine, which stalled every request and let this server's
    # own leases lapse, again at each takeover (the 100k restart test, issue #25).
    graph = await asyncio.to_thread(row.workflow_graph)
    params = {n.value for n in graph.nodes if n.kind is NodeKind.PARAMETER and n.value is not None}
    sources = await store.blob_sources(row.blob_refs)
    stored = {i: StoredBlob(ref, sources[ref].size) for i, ref in enumerate(row.blob_refs)
              if i in params and sources[ref].data is None}
    found = await store.get_blobs([r for i, r in enumerate(row.blob_refs) if i not in stored])
    graph.blobs = [b"" if i in stored else found[r] for i, r in enumerate(row.blob_refs)]
    return graph, stored


async def resume_all(store: DispatchStore, runner: Runner) -> list[str]:
    """Re-submit dispatches that were running when the server stopped, oldest first.

    Completed nodes keep their stored outputs (they become preset tasks); the rest run again.
    """
    resumed = []
    for dispatch_id in await store.unfinished():
        if await resume(store, runner, dispatch_id):
            resumed.append(dispatch_id)
    return resumed


async def resume(store: DispatchStore, runner: Runner, dispatch_id: str, epoch: int = 0) -> bool:
    """Resume one unfinished dispatch; False if it ended (or went) meanwhile. ``epoch``: a
    replica took it over at that tenure of its lease: nodes still running are found, not reset."""
    async with runner.placing(dispatch_id):  # a cancel meanwhile waits, then cancels the run
        return await _resume(store, runner, dispatch_id, epoch)


async def _resume(store: DispatchStore, runner: Runner, dispatch_id: str, epoch: int) -> bool:
    row = await store.get_dispatch(dispatch_id)
    if row is None or state.is_terminal(row.status) or row.status == PENDING:
        return False  # cancelled (or deleted) while earlier ones were resumed
    graph, stored = await load_graph(store, row)
    nodes = await store.get_nodes(dispatch_id)
    done = {n.node_id: n for n in nodes if n.status == Status.COMPLETED and n.output_ref
            and n.kind not in GATHER_KINDS}
    preset = stored_parameters(graph, stored, row.start_time or now_iso())
    preset.update(await presets(store, done))
    if not epoch:
        await store.reset_nodes(dispatch_id, [n.node_id for n in nodes
                                              if n.status == Status.RUNNING])
    root = row if row.root_dispatch_id == dispatch_id else await store.get_dispatch(row.root_dispatch_id)
    # Nodes that failed or were cancelled before the restart stay so (their descendants
    # never run); the rest runs to its end, then the dispatch ends as it would have.
    failed = {n.node_id: failure_summary(n.error, n.attempts) for n in nodes
              if n.status == Status.FAILED}
    cancelled = [n.node_id for n in nodes if n.status == Status.CANCELLED]
    await runner.submit(dispatch_id, graph, preset, (root or row).start_time or "",
                        failed=failed, cancelled=cancelled, epoch=epoch, takeover=epoch > 0,
                        recorded=frozenset(n.node_id for n in nodes
                                           if n.status == Status.COMPLETED))
    return True


def failure_summary(error: str | None, attempts: int | None) -> str:
    r"""The line a failed node gives its dispatch's error, from what its record holds: as the
    dispatch says it when the node fails while it runs. A node's record holds its traceback
    (whose last line is that error; the attempts are said after it), or, without one, the
    line itself with its attempts.

    >>> failure_summary("Traceback (most recent call last):\n  ...\nValueError: boom\n", 2)
    'ValueError: boom (failed 2 attempts)'
    >>> failure_summary("TimeLimitExceeded: over 3 s (failed 2 attempts)", 2)
    'TimeLimitExceeded: over 3 s (failed 2 attempts)'
    """
    text = (error or "failed").rstrip()
    if not text.startswith("Traceback (most recent call last):"):
        return text
    text = text.splitlines()[-1].strip() or "failed"
    return text + state.tries_said(attempts)


async def cancel(store: DispatchStore, runner: Runner, dispatch_id: str,
                 task_ids: list[int], forward: bool = True, wait: bool = True) -> dict[str, Any]:
    """Cancel a dispatch (``task_ids``: those nodes and what lies below them); the response.
    ``forward`` False: this replica carries out a cancel another one stored, and passes on
    none (``NotRunningHere`` if it no longer runs the dispatch). ``wait`` False: a cancel
    passed on to the replica running the dispatch is not waited for (a sublattice's child,
    whose parent's cancel stands whatever the child's answer)."""
    status = await store.get_status(check_id(dispatch_id))
    if status is None:
        raise DispatchNotFound(dispatch_id)
    if state.is_terminal(status):
        raise DispatchState.ended(dispatch_id, status)
    if status == PENDING:
        raise DispatchState(f"dispatch {dispatch_id} was never started (NEW_OBJECT); nothing to cancel")
    # Kinds only: whole records (their outputs' previews, stdout...) of 100,000 nodes took 3 s.
    kinds = [kind for _, kind in await store.node_names(dispatch_id)]
    bad = [t for t in task_ids if not 0 <= t < len(kinds)]
    if bad:
        raise NodeNotFound(f"dispatch {dispatch_id} has no nodes {bad}")
    cancelled: list[int] | None = None
    if dispatch_id not in runner.runs:
        async with runner.placing(dispatch_id):  # a resume under way puts its run here first
            if dispatch_id not in runner.runs:
                cancelled = await _cancel_stored(store, runner, dispatch_id)
    if cancelled is None and dispatch_id in runner.runs:
        try:
            taken = await runner.cancel(dispatch_id, task_ids or None)
        except NotRunningHere:
            pass  # its lease lapsed: the replica that takes it over is asked below
        else:
            if taken is None:  # ended meanwhile, or let go (its lease lapsed: asked below)
                status = await store.get_status(dispatch_id) or status
                if state.is_terminal(status) or runner.notices is None:
                    raise DispatchState.ended(dispatch_id, status)
            cancelled = taken
    if cancelled is None:  # replicas: the one running it cancels it, and answers
        assert runner.notices is not None
        if not forward:
            raise NotRunningHere(dispatch_id)
        answer = await runner.notices.request_cancel(dispatch_id, task_ids,
                                                     wait_s=30.0 if wait else 0.0)
        if answer is None:
            return {"message": f"Cancel of dispatch {dispatch_id} recorded; the replica that "
                               "runs it carries it out.", "cancelled": []}
        if "ok" in answer:
            return dict(answer["ok"])
        if "error" in answer:  # as the owner raised it: the dispatch had ended, most likely
            raise _answered_error(dispatch_id, str(answer["error"]), str(answer.get("message")))
        # Taken without an answer (a replica of an earlier version): read what it left.
        ended = await store.get_status(dispatch_id) if not task_ids else None
        if ended is not None and state.is_terminal(ended) and ended != Status.CANCELLED:
            raise DispatchState.ended(dispatch_id, ended)
        cancelled = [n.node_id for n in await store.get_nodes(dispatch_id)
                     if n.status == Status.CANCELLED]
        return {"message": f"Cancel of dispatch {dispatch_id} carried out by the replica "
                           "running it.", "cancelled": cancelled}
    stopped, unstopped = set(cancelled), []
    for child, node_id in await store.children(dispatch_id):
        if not task_ids or node_id in stopped:
            try:  # passed on, not awaited: the parent's answer must not wait on the child's
                await cancel(store, runner, child, [], wait=False)
            except DispatchState:
                pass  # the child ended meanwhile
            except DispatcherError as exc:  # this dispatch's cancel stands: say what did not
                log.warning("cancel of %s: its sublattice dispatch %s not cancelled: %s",
                            dispatch_id, child, exc)
                unstopped.append(f" Its sublattice dispatch {child} (node {node_id}) was not "
                                 f"cancelled: {exc}")
    what = f"tasks {task_ids} of dispatch {dispatch_id}" if task_ids else f"dispatch {dispatch_id}"
    if task_ids and not cancelled:
        return {"message": f"Nothing to cancel: {what} and every node below them have ended; "
                           "the dispatch runs on.", "cancelled": []}
    mine = sum(0 <= n < len(kinds) and kinds[n] in (NodeKind.ELECTRON, NodeKind.SUBLATTICE)
               for n in cancelled)  # the user's nodes: not the hidden gathering ones
    return {"message": f"Cancelled {what} ({mine} unfinished electron{'' if mine == 1 else 's'})."
                       + "".join(unstopped), "cancelled": cancelled}


def _answered_error(dispatch_id: str, name: str, message: str) -> Exception:
    """The error the replica running a dispatch answered a cancel with, raised here."""
    if name == "DispatchState":
        return DispatchState(message)
    if name == "NodeNotFound":
        return NodeNotFound(message)
    if name == "DispatchNotFound":
        return DispatchNotFound(dispatch_id)
    return Unavailable(f"the replica running dispatch {dispatch_id} could not cancel it: "
                       f"{name}: {message}")


async def _cancel_stored(store: DispatchStore, runner: Runner, dispatch_id: str) -> list[int] | None:
    """Cancel a dispatch RUNNING on disk that is not running here: its stored records, if no
    other replica runs it (None: one may; it is asked to). Called under ``runner.placing``."""
    # It may have just ended, its final records on their way to the store (a cancel of its
    # stored records would then mark nodes CANCELLED in a dispatch that ends COMPLETED, as a
    # kill example caught).
    await runner.recorder.flush()
    row = await store.get_dispatch(dispatch_id)
    if row is None:
        raise DispatchNotFound(dispatch_id)
    if state.is_terminal(row.status):
        raise DispatchState.ended(dispatch_id, row.status)
    if runner.notices is not None:
        return None
    # not resumed yet (resume runs in the background after a restart)
    graph, _ = await load_graph(store, row)
    return await _cancel_records(store, runner, dispatch_id, graph)


async def _cancel_records(store: DispatchStore, runner: Runner, dispatch_id: str,
                          graph: WorkflowGraph) -> list[int]:
    """Cancel a dispatch that is not running here through its stored records; the nodes
    cancelled."""
    nodes = await store.get_nodes(dispatch_id)
    return await runner.cancel_stored(dispatch_id, graph, {n.node_id: n.status for n in nodes},
                                      {n.node_id: n.error or "" for n in nodes})


async def delete(store: DispatchStore, runner: Runner, dispatch_id: str) -> list[str]:
    """Delete a finished dispatch (with its sublattice dispatches) or a never-started one;
    409 while it runs."""
    status = await store.get_status(check_id(dispatch_id))
    if status is None:
        raise DispatchNotFound(dispatch_id)
    if any(t.dispatch_id == dispatch_id for t in await store.active_triggers()):
        raise DispatchState(f"dispatch {dispatch_id} has active triggers, which dispatch it "
                            f"again: stop them first (ct.stop_triggers({dispatch_id!r}))")
    if status == PENDING and dispatch_id not in runner.runs:  # stored with disable_run
        return await store.delete_dispatches([dispatch_id], pending=True)
    if not state.is_terminal(status) or dispatch_id in runner.runs:
        raise DispatchState(f"dispatch {dispatch_id} is {status}: cancel it or let it finish first")
    return await store.delete_dispatches([dispatch_id])


DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def cutoff(older_than: str, now: datetime | None = None) -> str:
    """The ISO time ``older_than`` ago: a duration (``7d``, ``12h``, ``30m``) or an ISO time.

    >>> cutoff("1d", datetime(2026, 1, 2, tzinfo=UTC))
    '2026-01-01T00:00:00+00:00'
    """
    match = DURATION.fullmatch(older_than)
    try:
        if match:
            span = timedelta(seconds=float(match.group(1)) * _UNIT_S[match.group(2)])
            return ((now or datetime.now(UTC)) - span).isoformat()
        when = datetime.fromisoformat(older_than)
    except (ValueError, OverflowError):  # "", "-1d", "1e400d", "99999999999d" (issue #21)
        raise InvalidRequest(f"older_than must be a duration like 7d or 12h, or an ISO time; "
                             f"got {older_than!r}") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).isoformat()


async def purge(store: DispatchStore, older_than: str | None, statuses: list[str],
                dry_run: bool = False, owner: str | None = None) -> list[str]:
    """Delete finished dispatches that ended before ``older_than`` ago, with these statuses,
    of ``owner`` if given (``dry_run``: only name them)."""
    try:
        wanted = [Status(s) for s in statuses] or None
    except ValueError:
        raise InvalidRequest(f"status must be among {sorted(state.TERMINAL)}; got {statuses}") from None
    if wanted and any(not state.is_terminal(s) for s in wanted):
        raise InvalidRequest(f"only finished dispatches can be deleted: {sorted(state.TERMINAL)}")
    ids = await store.finished_before(cutoff(older_than) if older_than is not None else None,
                                      wanted, owner)
    return ids if dry_run else await store.delete_dispatches(ids)
