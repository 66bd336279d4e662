"""Compile a workflow graph into one Dask graph: one task per node.

Each node ``i`` of dispatch ``d`` that computes something becomes the task
``(f"{label}-{d}", i)`` running ``worker.run.run_node(spec, *parents)``, one argument per incoming
edge, in edge order. The graph has no task for what costs nothing to compute, so a workflow
runs as many Dask tasks as the same code written for Dask: small parameters are written into
their consumers' arguments, and gathering nodes (an electron list, tuple or dict, the
``:postprocess:reconstruct`` result) are built in place by their consumers from their own parents
(see ``covalent.wire.gather``). Nodes whose output is already known (reused from an earlier
dispatch, or completed before a restart) do not run again: a small one is written into its
consumers' arguments, a stored one is read by a ``load_output`` task on the worker that needs
it. A task nothing consumes is a *sink*: it returns a marker, not its value, since its output
is stored already. Nothing here unpickles a blob.

>>> from covalent.wire import WorkflowGraph, NodeKind, EdgeKind
>>> g = WorkflowGraph()
>>> p = g.add_node(":parameter:1", NodeKind.PARAMETER, value=g.add_blob(b"v"))
>>> e = g.add_node("f", NodeKind.ELECTRON, fn=g.add_blob(b"f"))
>>> s = g.add_node(":electron_list:", NodeKind.LIST)
>>> t = g.add_node("total", NodeKind.ELECTRON, fn=g.add_blob(b"t"))
>>> g.add_edge(p, e, "x", EdgeKind.ARG, 0)
>>> g.add_edge(e, s, "x", EdgeKind.ARG, 0)
>>> g.add_edge(s, t, "xs", EdgeKind.ARG, 0)
>>> c = compile_graph("d1", g, {})
>>> list(c.dsk), c.inlined, c.gathers, c.sinks
([('f-d1', 1), ('total-d1', 3)], {0: b'v'}, [2], [3])
>>> c.dsk[("total-d1", 3)].dependencies == {("f-d1", 1)}
True
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
from dask.task_spec import List, Task, TaskRef

from covalent.wire import GATHER_KINDS, Layout, NodeKind, WorkflowGraph
from covalent.wire.executors import TaskOptions

from .errors import InvalidRequest
from .protocol import GatherSpec, NodeOutcome, NodeSpec
from .worker.run import load_output, run_node

Key = tuple[str, int]


@functools.lru_cache(maxsize=4096)  # a 100,000-node fan-out has a handful of names
def node_label(name: str, kind: NodeKind) -> str:
    """A short name for the dashboard: the electron's name, else the node kind.

    >>> node_label("add", NodeKind.ELECTRON), node_label(":parameter:3", NodeKind.PARAMETER)
    ('add', 'parameter')
    """
    if kind in (NodeKind.ELECTRON, NodeKind.SUBLATTICE):
        label = re.sub(r"[^A-Za-z0-9_]", "_", name.removeprefix(":sublattice:")) or "electron"
        return label[:40]
    return str(kind)


def node_key(dispatch_id: str, node_id: int, label: str,
             prefixes: dict[str, str] | None = None) -> Key:
    """``(f"{label}-{dispatch_id}", node_id)``; with ``prefixes``, the keys of one label share
    one string object, which a pickle writes once and refers to after: the pickle of one task
    (what the scheduler sends a worker) names each of its parents in a few bytes, not the
    whole string (a square's task of 32 parents: 2,698 -> 1,368 bytes, #23).

    >>> shared: dict[str, str] = {}
    >>> node_key("d", 1, "add", shared)[0] is node_key("d", 2, "add", shared)[0]
    True
    """
    if prefixes is None:
        return (f"{label}-{dispatch_id}", node_id)
    prefix = prefixes.get(label)
    if prefix is None:
        prefix = prefixes[label] = f"{label}-{dispatch_id}"
    return (prefix, node_id)


ARGS_MAX = 1 << 20  # positions of a call's arguments (and of a list's items)


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
    # Acyclic: every node can be taken once all its parents were (Kahn's algorithm, in plain
    # lists: networkx took 26 ms for a 32x32 square's 32,802 edges, this 5 ms)
    children: list[list[int]] = [[] for _ in range(n)]
    parents = [0] * n
    for e in graph.edges:
        if not (0 <= e.src < n and 0 <= e.dst < n):
            raise InvalidRequest(f"edge {e.src}->{e.dst} names a node that does not exist")
        if e.index is not None and not 0 <= e.index < ARGS_MAX:
            raise InvalidRequest(f"edge {e.src}->{e.dst} feeds argument {e.index}, which no call "
                                 f"has (0 to {ARGS_MAX - 1})")
        children[e.src].append(e.dst)
        parents[e.dst] += 1
    ready = [i for i in range(n) if not parents[i]]
    taken = 0
    while ready:
        taken += 1
        for child in children[ready.pop()]:
            parents[child] -= 1
            if not parents[child]:
                ready.append(child)
    if taken < n:
        cycle = nx.find_cycle(nx.DiGraph((e.src, e.dst) for e in graph.edges))
        raise InvalidRequest(f"the graph has a cycle: {cycle}")


INLINE_PARAMETER_MAX = 64 * 1024  # larger values get one task, fetched by each consumer


@dataclass(frozen=True, slots=True)
class Preset:
    """A node's output known before the dispatch runs (reused, or completed before a restart):
    its bytes when small, else its address in the blob store."""

    inline: bytes | None
    ref: str | None
    size: int
    start: str
    end: str
    preview: str = ""
    reused_from: str | None = None  # the dispatch that computed it (None: this one)
    # what the node printed when it computed the output (a reused node shows it, as in
    # Covalent); None: left as recorded
    stdout: str | None = None
    stderr: str | None = None
    sub_dispatch_id: str | None = None  # a sublattice node's child dispatch, which computed it


@dataclass(slots=True)
class Compiled:
    """A dispatch as a Dask graph plus what the runner records without Dask.

    ``tasks`` maps the node ids that run as tasks to their Dask keys (node id order), and
    ``sinks`` lists those whose value no task consumes (the runner waits on them). ``inlined``
    maps the parameters written into their consumers' specs to their value; ``gathers`` are
    gathering nodes (lists, tuples, dicts, the result) gathered in place by their consumers and
    recorded by the runner once all their parents completed. A preset node becomes a task
    (reading its stored output on the worker) only if a task consumes it. ``options`` holds the
    executor options of the tasks that have any: they become Dask annotations at submit
    (resources, workers, retries, priority) and travel in the spec (time limit, pip).
    """

    dsk: dict[Key, Task]
    tasks: dict[int, Key]
    sinks: list[int]
    inlined: dict[int, bytes]
    gathers: list[int]
    options: dict[Key, TaskOptions] = field(default_factory=dict)


def compile_graph(dispatch_id: str, graph: WorkflowGraph, preset: dict[int, Preset],
                  options: dict[int, TaskOptions] | None = None,
                  skip: frozenset[int] | set[int] = frozenset(), generation: int = 1) -> Compiled:
    """The Dask graph of a dispatch; ``preset`` maps node ids to their known outputs,
    ``options`` electrons to their executor's options (``executors.ExecutorTable.resolve``),
    and ``skip`` names nodes not to run (ended, or waited for elsewhere): nothing compiled may
    consume one. A later ``generation`` (what is left after Dask released some nodes) gets
    keys of its own: a key Dask has just released may still be on a worker, and reusing it
    would have Dask run that node twice."""
    options = options or {}
    name = dispatch_id if generation == 1 else f"{dispatch_id}-r{generation}"
    parents = graph.parents()
    blobs = graph.blobs
    inlined: dict[int, NodeOutcome] = {}
    gathering: list[int] = []
    computed: list[int] = []
    for node in graph.nodes:
        known = preset.get(node.id)
        if node.id in skip and known is None and node.kind is not NodeKind.PARAMETER:
            continue  # (a parameter costs nothing: it is written into its consumers)
        if node.kind is NodeKind.PARAMETER and node.value is not None and known is None:
            if len(blobs[node.value]) <= INLINE_PARAMETER_MAX:
                inlined[node.id] = NodeOutcome(node.id, blobs[node.value])
                continue
        if known is not None:
            if known.inline is not None:
                inlined[node.id] = NodeOutcome(node.id, known.inline)
            continue  # stored: a task reads it if a consumer needs it (see argument)
        if str(node.kind) in GATHER_KINDS:
            gathering.append(node.id)
            continue
        computed.append(node.id)
    prefixes: dict[str, str] = {}  # one string object per label: see node_key
    tasks = {i: node_key(name, i, node_label(graph.nodes[i].name, graph.nodes[i].kind), prefixes)
             for i in computed}
    dsk: dict[Key, Task] = {}
    consumed: set[Key] = set()
    gathers: dict[int, tuple[GatherSpec, List]] = {}
    # One TaskRef per task, shared by its consumers: a pickle of the graph writes it once and
    # refers to it after, and Dask unpickles one object, not one per edge (a 32x32 square:
    # 1,024 references instead of 31,744, #23).
    task_refs: dict[Key, TaskRef] = {}

    def arguments(node_id: int) -> tuple[Layout, tuple[GatherSpec | None, ...], list[Any]]:
        edges = parents[node_id]
        layout = tuple((e.kind.value, e.name, e.index) for e in edges)
        args = [argument(e.src) for e in edges]
        return layout, tuple(g for g, _ in args), [a for _, a in args]

    def argument(src: int) -> tuple[GatherSpec | None, Any]:
        if src in inlined:
            return None, inlined[src]
        if src not in tasks and src in preset:  # stored: read on the worker, not sent
            key = tasks[src] = node_key(name, src, "stored", prefixes)
            dsk[key] = Task(key, load_output, src, None, preset[src].ref)
        if src in tasks:
            key = tasks[src]
            ref = task_refs.get(key)
            if ref is None:
                consumed.add(key)
                ref = task_refs[key] = TaskRef(key)
            return None, ref
        if src in skip and graph.nodes[src].kind is not NodeKind.PARAMETER:
            raise ValueError(f"node {src} is skipped but a node to run consumes it")
        if src not in gathers:  # a gathering node: gathered in place from its own parents
            layout, nested, refs = arguments(src)  # (node ids are not in topological order)
            node = graph.nodes[src]
            extra = (blobs[node.value] if node.kind in (NodeKind.DICT, NodeKind.TUPLE)
                     and node.value is not None else None)  # the keys, the namedtuple's type
            gathers[src] = (GatherSpec(str(node.kind), extra, layout, nested), List(*refs))
        return gathers[src]

    planned = {i: arguments(i) for i in computed}
    for node_id, (layout, nested, refs) in planned.items():
        node, key = graph.nodes[node_id], tasks[node_id]
        opts = options.get(node_id)
        spec = NodeSpec(
            dispatch_id=dispatch_id,
            node_id=node.id,
            name=node.name,
            kind=str(node.kind),
            fn=blobs[node.fn] if node.fn is not None else None,
            value=blobs[node.value] if node.value is not None else None,
            hooks=blobs[node.hooks] if node.hooks is not None else None,
            layout=layout,
            gathers=nested if any(g is not None for g in nested) else (),
            sink=key not in consumed,
            executor=node.executor,
            time_limit=opts.time_limit if opts is not None else 0.0,
            pip=opts.pip if opts is not None else (),
            retries=opts.retries if opts is not None else 0,
            generation=generation,
        )
        dsk[key] = Task(key, run_node, spec, *refs)
    sinks = [i for i in computed if tasks[i] not in consumed]
    return Compiled(dsk, dict(sorted(tasks.items())), sinks,
                    {i: o.data for i, o in inlined.items() if o.data is not None}, gathering,
                    {tasks[i]: o for i, o in options.items() if i in tasks})
