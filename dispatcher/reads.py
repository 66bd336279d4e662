"""Read dispatches for the API: a status (waiting for the final one), a Result's header with
the blobs it carries, the stored outputs of some nodes, a dispatch's own blobs, one node.

Everything read here is committed: a status the recorder has not written yet is never
reported (``read_status`` says why it cannot be, rather than answering stale).
"""

from __future__ import annotations

import asyncio
from typing import Any

from . import state
from .dispatches import check_id
from .errors import DispatchNotFound, InvalidRequest, NodeNotFound, StorageFull, Unavailable
from .recorder import Recorder
from .state import Status
from .store import BlobSource, DispatchStore, NodeRecord


async def read_status(store: DispatchStore, recorder: Recorder, dispatch_id: str,
                      wait: float) -> Status:
    """The committed status; with ``wait`` > 0, block until it is terminal or ``wait`` passes."""
    check_id(dispatch_id)
    ev = recorder.waiter(dispatch_id) if wait > 0 else None
    try:
        status = await store.get_status(dispatch_id)
        if status is None:
            raise DispatchNotFound(dispatch_id)
        if ev is not None and not state.is_terminal(status):
            try:
                await asyncio.wait_for(ev.wait(), wait)
            except TimeoutError:
                pass
            now = await store.get_status(dispatch_id)  # (NEW_OBJECT is falsy: no ``or``)
            status = now if now is not None else status
        if recorder.write_error and dispatch_id in recorder.unwritten:
            if recorder.write_busy:
                raise Unavailable("the dispatcher's store is locked by another process; retry shortly")
            raise StorageFull(f"the dispatcher cannot record the progress of {dispatch_id} "
                              f"({recorder.write_error}); free space in its data dir: it keeps "
                              "retrying and loses nothing it has recorded")
        return status
    finally:
        if ev is not None:
            recorder.release(dispatch_id, ev)


PARTS = ("none", "result", "all")
GATHERS = ("json", "text")


def result_options(parts: str, gathers: str) -> tuple[str, str]:
    """``parts`` and ``gathers`` of a Result's request, checked (before a long-poll waits)."""
    if parts not in PARTS:
        raise InvalidRequest(f"parts must be one of {', '.join(PARTS)}, got {parts!r}")
    if gathers not in GATHERS:
        raise InvalidRequest(f"gathers must be one of {', '.join(GATHERS)}, got {gathers!r}")
    return parts, gathers


async def read_result(store: DispatchStore, dispatch_id: str, results_dir: str, parts: str,
                      gathers: str = "json") -> tuple[dict[str, Any], list[BlobSource]]:
    """A Result's header (the dispatch record and every node record) and the blobs to send with
    it: none, those the lattice's result is made of (``result``), or every output (``all``).
    Everything else is fetched when first used (``output_sources``, ``dispatch_blob``).

    ``gathers="text"``: a gathering node's ``gather`` is its spec as the JSON text it is stored
    as, for the client to parse when it needs it (the SDK asks for that: a 32x32 square's 1,024
    list specs are 170,000 JSON values, which decoded, encoded again and parsed by the client
    cost more than the rest of the records, #23); ``json``: the spec as a JSON object."""
    result_options(parts, gathers)
    row = await store.get_dispatch(dispatch_id)
    if row is None:
        raise DispatchNotFound(dispatch_id)
    nodes = await store.get_nodes(dispatch_id)
    wanted: list[int] = []
    if parts == "all":
        wanted = [n.node_id for n in nodes]
    elif parts == "result" and nodes and nodes[-1].kind == "postprocess":
        wanted = _parts_of(nodes, nodes[-1].node_id)
    refs = [nodes[i].output_ref or "" for i in wanted]
    if parts != "none" and row.template_ref:
        refs.append(row.template_ref)
    frame = _Frame(await store.blob_sources(refs))
    sent = set(wanted)
    header = {
        "dispatch": {
            "dispatch_id": row.dispatch_id, "root_dispatch_id": row.root_dispatch_id,
            "parent_dispatch_id": row.parent_dispatch_id, "name": row.name,
            "status": str(row.status), "start_time": row.start_time, "end_time": row.end_time,
            "error": row.error, "results_dir": results_dir,
        },
        "template": frame.add(row.template_ref) if parts != "none" else None,
        "nodes": [
            {"node_id": n.node_id, "name": n.name, "kind": n.kind, "status": str(n.status),
             "start_time": n.start_time, "end_time": n.end_time, "error": n.error,
             "stdout": n.stdout, "stderr": n.stderr, "sub_dispatch_id": n.sub_dispatch_id,
             "preview": n.preview, "size": n.output_size,
             "gather": n.gather if gathers == "text" else n.gather_spec,
             "stored": n.output_ref is not None, "reused_from": n.reused_from,
             "attempts": n.attempts,
             "output": frame.add(n.output_ref) if n.node_id in sent else None}
            for n in nodes
        ],
    }
    return header, frame.chosen


class _Frame:
    """The blobs a framed answer carries, each once, by index."""

    def __init__(self, sources: dict[str, BlobSource]) -> None:
        self.sources = sources
        self.chosen: list[BlobSource] = []
        self.index: dict[str, int] = {}

    def add(self, ref: str | None) -> int | None:
        if not ref or ref not in self.sources:
            return None
        if ref not in self.index:
            self.index[ref] = len(self.chosen)
            self.chosen.append(self.sources[ref])
        return self.index[ref]


def _parts_of(nodes: list[NodeRecord], node_id: int) -> list[int]:
    """The nodes whose stored outputs ``node_id``'s value is made of (through gathers)."""
    out, stack, seen = [], [node_id], set()
    while stack:
        i = stack.pop()
        if i in seen or not 0 <= i < len(nodes):
            continue
        seen.add(i)
        spec = nodes[i].gather_spec
        if spec is not None:
            stack.extend(int(p) for p in spec.get("parts", []))
        elif nodes[i].output_ref:
            out.append(i)
    return sorted(out)


NODE_ID_LIMIT = 1 << 31  # node ids are 32-bit integers in both stores


async def output_sources(store: DispatchStore, dispatch_id: str, node_ids: list[int]
                         ) -> tuple[dict[str, Any], list[BlobSource]]:
    """The stored outputs of some nodes, as a frame header (``outputs``: node id -> blob index,
    ``gathers``: node id -> how it is made of its parts) and the blobs to stream."""
    # only those (#23); an id no column can hold is no node's (it is not sent to the database)
    nodes = await store.get_some_nodes(check_id(dispatch_id),
                                       [i for i in node_ids if 0 <= i < NODE_ID_LIMIT])
    bad = [i for i in node_ids if i not in nodes]
    if bad:
        if not nodes and await store.get_status(dispatch_id) is None:
            raise DispatchNotFound(dispatch_id)
        raise NodeNotFound(f"dispatch {dispatch_id} has no nodes {bad[:10]}")
    frame = _Frame(await store.blob_sources(nodes[i].output_ref or "" for i in node_ids))
    outputs: dict[str, int] = {}
    gathers: dict[str, Any] = {}
    for i in dict.fromkeys(node_ids):
        spec = nodes[i].gather_spec
        if spec is not None:
            gathers[str(i)] = spec
        else:
            index = frame.add(nodes[i].output_ref)
            if index is not None:
                outputs[str(i)] = index
    return {"outputs": outputs, "gathers": gathers}, frame.chosen


async def dispatch_blob(store: DispatchStore, dispatch_id: str, which: str) -> BlobSource:
    """The dispatch's ``inputs``, ``lattice`` or ``template`` blob."""
    row = await store.get_dispatch(check_id(dispatch_id))
    if row is None:
        raise DispatchNotFound(dispatch_id)
    refs = {"inputs": row.inputs_ref, "lattice": row.lattice_ref, "template": row.template_ref}
    if which not in refs:
        raise InvalidRequest(f"no such part {which!r}: inputs, lattice or template")
    ref = refs[which]
    found = await store.blob_sources([ref] if ref else [])
    if not ref or ref not in found:
        raise NodeNotFound(f"dispatch {dispatch_id} has no {which} stored")
    return found[ref]


async def read_node(store: DispatchStore, dispatch_id: str, node_id: int) -> NodeRecord:
    node = await store.get_node(check_id(dispatch_id), node_id)
    if node is None:
        if await store.get_status(dispatch_id) is None:
            raise DispatchNotFound(dispatch_id)
        raise NodeNotFound(f"dispatch {dispatch_id} has no node {node_id}")
    return node
