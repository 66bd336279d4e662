"""Find the nodes of a redispatch that may reuse the outputs of an earlier dispatch.

A node's *signature* hashes its kind, name, function, value and hooks blobs and, recursively,
the signatures of its parents with the edges' names and positions. A node of the new graph
whose signature equals that of a node the old dispatch COMPLETED gets the old output: its
function, inputs and everything upstream are unchanged. It is recorded COMPLETED at submit,
with ``start_time == end_time`` and the id of the dispatch that computed the output.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import networkx as nx

from covalent.wire import GATHER_KINDS, Node, WorkflowGraph

from .compile import INLINE_PARAMETER_MAX, Preset
from .errors import DispatchNotFound
from .protocol import now_iso
from .state import Status
from .offload import off_loop
from .store import DispatchRecord, DispatchStore, NodeRecord


def signatures(graph: WorkflowGraph, refs: list[str]) -> list[str]:
    """The signature of every node; ``refs[i]`` is the content hash of blob ``i``."""
    parents = graph.parents()
    sigs: list[str] = [""] * len(graph.nodes)
    for node in _topological(graph):
        h = hashlib.sha256()
        parts = [str(node.kind), node.name]
        for idx in (node.fn, node.value, node.hooks):
            parts.append(refs[idx] if idx is not None else "-")
        for e in parents[node.id]:
            parts.append(f"{e.kind}:{e.name}:{e.index}:{sigs[e.src]}")
        h.update("\x00".join(parts).encode())
        sigs[node.id] = h.hexdigest()
    return sigs


def _topological(graph: WorkflowGraph) -> list[Node]:
    g = nx.DiGraph()
    g.add_nodes_from(n.id for n in graph.nodes)
    g.add_edges_from((e.src, e.dst) for e in graph.edges)
    return [graph.nodes[i] for i in nx.topological_sort(g)]


def _both_signatures(row: DispatchRecord, graph: WorkflowGraph, refs: list[str]
                     ) -> tuple[list[str], list[str]]:
    return signatures(row.workflow_graph(), row.blob_refs), signatures(graph, refs)


async def reusable_outputs(store: DispatchStore, graph: WorkflowGraph, refs: list[str],
                           old_id: str) -> dict[int, Preset]:
    """Map new node ids to the stored outputs of dispatch ``old_id`` they can reuse;
    ``refs[i]`` is the content hash of the new graph's blob ``i``.

    Gathering nodes are not reused: they cost nothing and are gathered again from their parts.
    """
    row = await store.get_dispatch(old_id)
    if row is None:
        raise DispatchNotFound(old_id)
    # Off the loop: parsing and hashing 100,000 nodes takes seconds (every request waits).
    old_sigs, new_sigs = await off_loop(len(graph.nodes) + len(row.blob_refs), _both_signatures,
                                        row, graph, refs)
    nodes = await store.get_nodes(old_id)
    done = {old_sigs[n.node_id]: n for n in nodes if n.status == Status.COMPLETED and n.output_ref}
    picked = {}
    for node in graph.nodes:
        if str(node.kind) in GATHER_KINDS:
            continue  # cheap, and the result's template may hold values outside the signature
        old = done.get(new_sigs[node.id])
        if old is not None:
            picked[node.id] = old
    # A reused node did not run: Covalent shows that with start_time == end_time (#12 item 4).
    # It keeps where its output was computed (the first dispatch, through chains of reuse).
    stamp = now_iso()
    return {i: replace(p, start=stamp, end=stamp, reused_from=picked[i].reused_from or old_id)
            for i, p in (await presets(store, picked)).items()}


async def presets(store: DispatchStore, nodes: dict[int, NodeRecord]) -> dict[int, Preset]:
    """What a dispatch needs to know of stored outputs to hand them to the tasks that use
    them: small ones by value, others by address (read on the worker)."""
    sources = await store.blob_sources([n.output_ref for n in nodes.values() if n.output_ref])
    out = {}
    for node_id, n in nodes.items():
        src = sources.get(n.output_ref or "")
        if src is None:
            continue  # its blob is gone: the node runs again
        inline = src.data if src.data is not None and len(src.data) <= INLINE_PARAMETER_MAX else None
        out[node_id] = Preset(inline, src.ref, src.size, n.start_time or "", n.end_time or "",
                              n.preview or "", n.reused_from, n.stdout, n.stderr,
                              n.sub_dispatch_id)
    return out
