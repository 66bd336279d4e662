"""Create, start, resume, read and cancel dispatches: the operations behind the routes.

The server handles only JSON and opaque blobs here; user objects stay pickled.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import uuid
from typing import Any

from covalent import wire
from covalent._graph import WorkflowGraph
from covalent.wire import clean_text

from .compile import validate
from .errors import (DispatchNotFound, DispatchState, InvalidRequest, NodeNotFound, StorageFull,
                     Unavailable)
from .execute import now_iso
from .reuse import reusable_outputs
from .runner import Runner
from .store import TERMINAL, SqliteStore

_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def check_id(dispatch_id: str) -> str:
    """Reject anything that is not a dispatch id (a uuid) before it reaches the store."""
    if not isinstance(dispatch_id, str) or not _ID.match(dispatch_id):
        raise DispatchNotFound(dispatch_id)
    return dispatch_id


def parse_submission(body: bytes) -> tuple[dict[str, Any], WorkflowGraph, list[bytes]]:
    """Unframe and check a dispatch request; raises InvalidRequest with the reason."""
    try:
        header, blobs = wire.unpack(body)
    except wire.WireError as exc:
        raise InvalidRequest(str(exc)) from None
    try:
        check_id(header["dispatch_id"])
        if not isinstance(header.get("name", ""), str):
            raise TypeError("name must be a string")
        graph = WorkflowGraph.from_json(header["graph"], blobs)
        for field in ("inputs", "lattice"):
            idx = header.get(field)
            if not isinstance(idx, int) or isinstance(idx, bool) or not 0 <= idx < len(blobs):
                raise ValueError(f"{field} must index a blob")
    except DispatchNotFound:
        raise InvalidRequest("dispatch_id must be a uuid4 string") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidRequest(f"malformed dispatch: {type(exc).__name__}: {exc}") from None
    if not graph.nodes:
        raise InvalidRequest("the graph has no nodes")
    validate(graph)
    return header, graph, blobs


async def create(store: SqliteStore, runner: Runner, header: dict[str, Any], graph: WorkflowGraph,
                 blobs: list[bytes], *, parent: tuple[str, int] | None = None,
                 reuse_from: str | None = None) -> tuple[str, bool]:
    """Store a dispatch and start it unless ``disable_run``; returns (id, created).

    ``parent`` = (dispatch id, node id) of the sublattice node this dispatch runs for.
    """
    dispatch_id = header["dispatch_id"]
    now = now_iso()
    post = graph.nodes[-1]
    root, root_start = dispatch_id, now
    if parent is not None:
        prow = await store.run(store.get_dispatch, parent[0])
        if prow is None:
            raise DispatchNotFound(parent[0])
        root = prow["root_dispatch_id"]
        root_row = prow if root == parent[0] else await store.run(store.get_dispatch, root)
        root_start = (root_row or prow)["start_time"] or now  # a child runs in its root's turn
    record = {
        "dispatch_id": dispatch_id,
        "root_dispatch_id": root,
        "parent_dispatch_id": parent[0] if parent else None,
        "parent_node_id": parent[1] if parent else None,
        "name": clean_text(header.get("name") or "lattice", 1000),
        # Stored RUNNING when it will run, in the same transaction as the graph: the 201 is
        # sent only once the dispatch is on disk in a state that resume picks up (issue #11).
        "status": "RUNNING" if not header.get("disable_run") else "NEW_OBJECT",
        "start_time": now if not header.get("disable_run") else None,
        "created_at": now,
        "graph": json.dumps(graph.to_json(), separators=(",", ":")),
        "meta": json.dumps({"client": header.get("client", {}), "redispatch_of": reuse_from}),
    }
    extra = {"inputs_ref": blobs[header["inputs"]], "lattice_ref": blobs[header["lattice"]]}
    if post.value is not None:
        extra["template_ref"] = blobs[post.value]
    nodes = [(n.id, n.name, str(n.kind)) for n in graph.nodes]
    run = not header.get("disable_run")
    # Everything that can refuse the request happens before the dispatch is stored.
    preset = await reusable_outputs(store, graph, reuse_from) if run and reuse_from else {}
    try:
        await store.run(store.create_dispatch, record, nodes, graph.blobs, extra)
    except sqlite3.IntegrityError:
        return dispatch_id, False  # a retried request: the dispatch exists already
    if parent is not None:
        await store.run(store.set_sub_dispatch, parent[0], parent[1], dispatch_id)
    if run:
        await runner.submit(dispatch_id, graph, preset, root_start)
    return dispatch_id, True


async def start_pending(store: SqliteStore, runner: Runner, dispatch_id: str) -> bool:
    """Start a dispatch stored with ``disable_run``; True if this call started it.

    The store marks it RUNNING only if it is still NEW_OBJECT (one transaction), so concurrent
    starts (two ``/start`` calls, a ``/start`` racing a trigger) run it once.
    """
    if await store.run(store.get_status, check_id(dispatch_id)) is None:
        raise DispatchNotFound(dispatch_id)
    if not await store.run(store.claim_pending, dispatch_id, now_iso()):
        return False  # started already (or finished)
    row = await store.run(store.get_dispatch, dispatch_id)
    assert row is not None
    graph = await load_graph(store, row)
    await runner.submit(dispatch_id, graph, {}, row["start_time"] or "")
    return True


async def clone(store: SqliteStore, runner: Runner, row: dict[str, Any]) -> str:
    """Run a stored dispatch again, server-side, as a new dispatch with the same inputs."""
    graph = await load_graph(store, row)
    found = await store.run(store.get_blobs, [row["inputs_ref"], row["lattice_ref"]])
    blobs = list(graph.blobs)
    header = {"dispatch_id": str(uuid.uuid4()), "name": row["name"],
              "inputs": len(blobs), "lattice": len(blobs) + 1}
    blobs += [found[row["inputs_ref"]], found[row["lattice_ref"]]]
    new_id, _ = await create(store, runner, header, graph, blobs)
    return new_id


async def load_graph(store: SqliteStore, row: dict[str, Any]) -> WorkflowGraph:
    refs = json.loads(row["blob_refs"])
    found = await store.run(store.get_blobs, refs)
    return WorkflowGraph.from_json(json.loads(row["graph"]), [found[r] for r in refs])


async def resume_all(store: SqliteStore, runner: Runner) -> list[str]:
    """Re-submit dispatches that were running when the server stopped.

    Completed nodes keep their stored outputs (they become preset tasks); the rest run again.
    """
    resumed = []
    for dispatch_id in await store.run(store.unfinished):
        row = await store.run(store.get_dispatch, dispatch_id)
        assert row is not None
        graph = await load_graph(store, row)
        nodes = await store.run(store.get_nodes, dispatch_id)
        done = {n["node_id"]: n for n in nodes if n["status"] == "COMPLETED" and n["output_ref"]}
        outputs = await store.run(store.get_blobs, [n["output_ref"] for n in done.values()])
        preset = {i: (outputs[n["output_ref"]], n["start_time"] or "", n["end_time"] or "")
                  for i, n in done.items()}
        stale = [n["node_id"] for n in nodes if n["status"] == "RUNNING"]
        await store.run(store.reset_nodes, dispatch_id, stale)
        root = row if row["root_dispatch_id"] == dispatch_id else await store.run(
            store.get_dispatch, row["root_dispatch_id"])
        await runner.submit(dispatch_id, graph, preset, (root or row)["start_time"] or "")
        resumed.append(dispatch_id)
    return resumed


async def read_status(store: SqliteStore, runner: Runner, dispatch_id: str, wait: float) -> str:
    """The committed status; with ``wait`` > 0, block until it is terminal or ``wait`` passes."""
    check_id(dispatch_id)
    ev = runner.waiter(dispatch_id) if wait > 0 else None
    try:
        status = await store.run(store.get_status, dispatch_id)
        if status is None:
            raise DispatchNotFound(dispatch_id)
        if ev is not None and status not in TERMINAL:
            try:
                await asyncio.wait_for(ev.wait(), wait)
            except TimeoutError:
                pass
            status = await store.run(store.get_status, dispatch_id)
        if runner.write_error and dispatch_id in runner.unwritten and runner.write_busy:
            raise Unavailable("the dispatcher's store is locked by another process; retry shortly")
        if runner.write_error and dispatch_id in runner.unwritten:
            raise StorageFull(f"the dispatcher cannot record the progress of {dispatch_id} "
                              f"({runner.write_error}); free space in its data dir: it keeps "
                              "retrying and loses nothing it has recorded")
        return str(status)
    finally:
        if ev is not None:
            runner.release(dispatch_id, ev)


async def read_result(store: SqliteStore, dispatch_id: str, results_dir: str) -> bytes:
    """The framed Result body: dispatch record, every node, and the blobs they reference."""
    return await store.run(_read_result_sync, store, dispatch_id, results_dir)


def _read_result_sync(store: SqliteStore, dispatch_id: str, results_dir: str) -> bytes:
    row = store.get_dispatch(dispatch_id)
    if row is None:
        raise DispatchNotFound(dispatch_id)
    nodes = store.get_nodes(dispatch_id)
    refs = [row["result_ref"], row["inputs_ref"], row["lattice_ref"], row["template_ref"]]
    refs += [n["output_ref"] for n in nodes]
    found = store.get_blobs(r for r in refs if r)
    blobs: list[bytes] = []

    def add(ref: str | None) -> int | None:
        if not ref:
            return None
        blobs.append(found[ref])
        return len(blobs) - 1

    header = {
        "dispatch": {
            "dispatch_id": dispatch_id,
            "root_dispatch_id": row["root_dispatch_id"],
            "parent_dispatch_id": row["parent_dispatch_id"],
            "name": row["name"],
            "status": row["status"],
            "start_time": row["start_time"],
            "end_time": row["end_time"],
            "error": row["error"],
            "results_dir": results_dir,
        },
        "result": add(row["result_ref"]),
        "inputs": add(row["inputs_ref"]),
        "lattice": add(row["lattice_ref"]),
        "template": add(row["template_ref"]),
        "nodes": [
            {
                "node_id": n["node_id"], "name": n["name"], "kind": n["kind"], "status": n["status"],
                "start_time": n["start_time"], "end_time": n["end_time"], "error": n["error"],
                "stdout": n["stdout"], "stderr": n["stderr"],
                "sub_dispatch_id": n["sub_dispatch_id"], "output": add(n["output_ref"]),
            }
            for n in nodes
        ],
    }
    return wire.pack(header, blobs)


async def read_node(store: SqliteStore, dispatch_id: str, node_id: int) -> dict[str, Any]:
    nodes = await store.run(store.get_nodes, check_id(dispatch_id))
    if not nodes:
        if await store.run(store.get_status, dispatch_id) is None:
            raise DispatchNotFound(dispatch_id)
    if not 0 <= node_id < len(nodes):
        raise NodeNotFound(f"dispatch {dispatch_id} has no node {node_id}")
    n = dict(nodes[node_id])
    n["has_output"] = bool(n.pop("output_ref"))
    return n


async def cancel(store: SqliteStore, runner: Runner, dispatch_id: str,
                 task_ids: list[int]) -> dict[str, Any]:
    status = await store.run(store.get_status, check_id(dispatch_id))
    if status is None:
        raise DispatchNotFound(dispatch_id)
    if status in TERMINAL:
        raise DispatchState(f"dispatch {dispatch_id} already ended {status}; nothing to cancel")
    if status == "NEW_OBJECT" and dispatch_id not in runner.runs:
        raise DispatchState(f"dispatch {dispatch_id} was never started (NEW_OBJECT); nothing to cancel")
    row_nodes = await store.run(store.get_nodes, dispatch_id)
    bad = [t for t in task_ids if not 0 <= t < len(row_nodes)]
    if bad:
        raise NodeNotFound(f"dispatch {dispatch_id} has no nodes {bad}")
    cancelled = await runner.cancel(dispatch_id, task_ids or None)
    for child, node_id in await store.run(store.children, dispatch_id):
        if not task_ids or node_id in cancelled:
            try:
                await cancel(store, runner, child, [])
            except DispatchState:
                pass  # the child ended meanwhile
    what = f"tasks {task_ids} of dispatch {dispatch_id}" if task_ids else f"dispatch {dispatch_id}"
    return {"message": f"Cancelled {what} ({len(cancelled)} unfinished nodes).",
            "cancelled": cancelled}
