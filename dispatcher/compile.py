"""Compile a workflow graph into one Dask graph: one task per node.

Each node ``i`` of dispatch ``d`` becomes the task ``(f"{label}-{d}", i)`` running
``execute.run_node(spec, *parents)``, whose parents are ``TaskRef``s to the tasks of the
node's incoming edges, in edge order. Nodes whose output is already known (reused from an
earlier dispatch, or completed before a restart) become ``preset_outcome`` tasks holding the
stored bytes, so they do not run again. Nothing here unpickles a blob.

>>> from covalent._graph import WorkflowGraph, NodeKind, EdgeKind
>>> g = WorkflowGraph()
>>> p = g.add_node(":parameter:1", NodeKind.PARAMETER, value=g.add_blob(b"v"))
>>> e = g.add_node("f", NodeKind.ELECTRON, fn=g.add_blob(b"f"))
>>> g.add_edge(p, e, "x", EdgeKind.ARG, 0)
>>> dsk = compile_graph("d1", g, {})
>>> sorted(dsk), dsk[("f-d1", 1)].dependencies == {("parameter-d1", 0)}
([('f-d1', 1), ('parameter-d1', 0)], True)
"""

from __future__ import annotations

import re
from typing import Any

import networkx as nx
from dask._task_spec import Task, TaskRef

from covalent._graph import NodeKind, WorkflowGraph

from .errors import InvalidRequest
from .execute import NodeSpec, preset_outcome, run_node

Key = tuple[str, int]


def node_label(name: str, kind: NodeKind) -> str:
    """A short name for the dashboard: the electron's name, else the node kind.

    >>> node_label("add", NodeKind.ELECTRON), node_label(":parameter:3", NodeKind.PARAMETER)
    ('add', 'parameter')
    """
    if kind in (NodeKind.ELECTRON, NodeKind.SUBLATTICE):
        label = re.sub(r"[^A-Za-z0-9_]", "_", name.removeprefix(":sublattice:")) or "electron"
        return label[:40]
    return str(kind)


def node_key(dispatch_id: str, node_id: int, label: str) -> Key:
    return (f"{label}-{dispatch_id}", node_id)


def validate(graph: WorkflowGraph) -> None:
    """Reject graphs the runner cannot run: bad ids, blob indices, dangling edges, cycles."""
    n = len(graph.nodes)
    for i, node in enumerate(graph.nodes):
        if node.id != i:
            raise InvalidRequest(f"node ids must be 0..{n - 1} in order; position {i} has id {node.id}")
        for field in ("fn", "value", "hooks"):
            idx = getattr(node, field)
            if idx is not None and not 0 <= idx < len(graph.blobs):
                raise InvalidRequest(f"node {i} {field} points at blob {idx}, which does not exist")
        if node.kind in (NodeKind.ELECTRON, NodeKind.SUBLATTICE) and node.fn is None:
            raise InvalidRequest(f"node {i} ({node.name}) is an electron without a function")
        if node.kind in (NodeKind.PARAMETER, NodeKind.POSTPROCESS, NodeKind.DICT) and node.value is None:
            raise InvalidRequest(f"node {i} ({node.name}) of kind {node.kind} needs a value blob")
    g = nx.DiGraph()
    g.add_nodes_from(range(n))
    for e in graph.edges:
        if not (0 <= e.src < n and 0 <= e.dst < n):
            raise InvalidRequest(f"edge {e.src}->{e.dst} names a node that does not exist")
        g.add_edge(e.src, e.dst)
    if not nx.is_directed_acyclic_graph(g):
        cycle = nx.find_cycle(g)
        raise InvalidRequest(f"the graph has a cycle: {cycle}")


def compile_graph(dispatch_id: str, graph: WorkflowGraph, preset: dict[int, tuple[bytes, str, str]],
                  server: str = "", token: str = "") -> dict[Key, Task]:
    """The Dask graph of a dispatch, its keys in node id order; ``preset`` maps node ids to
    (output, start, end).

    ``server`` and ``token`` tell sublattice nodes where to submit their child dispatch.
    """
    parents = graph.parents()
    keys = [node_key(dispatch_id, n.id, node_label(n.name, n.kind)) for n in graph.nodes]
    blobs = graph.blobs
    dsk: dict[Key, Task] = {}
    for node in graph.nodes:
        key = keys[node.id]
        if node.id in preset:
            data, start, end = preset[node.id]
            dsk[key] = Task(key, preset_outcome, node.id, data, start, end)
            continue
        edges = parents[node.id]
        spec = NodeSpec(
            dispatch_id=dispatch_id,
            node_id=node.id,
            name=node.name,
            kind=str(node.kind),
            fn=blobs[node.fn] if node.fn is not None else None,
            value=blobs[node.value] if node.value is not None else None,
            hooks=blobs[node.hooks] if node.hooks is not None else None,
            layout=tuple((str(e.kind), e.name, e.index) for e in edges),
            server=server if node.kind is NodeKind.SUBLATTICE else "",
            token=token if node.kind is NodeKind.SUBLATTICE else "",
        )
        refs: list[Any] = [TaskRef(keys[e.src]) for e in edges]
        dsk[key] = Task(key, run_node, spec, *refs)
    return dsk
