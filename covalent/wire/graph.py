"""Hold a workflow graph: nodes, edges and the pickled blobs they point to, as plain JSON.

The graph is built on the client while the lattice function runs and is sent to the server
in one request (see ``covalent.wire``). Nodes are numbered in the order they are added, which
is Covalent's numbering. Blobs (pickled functions, parameter values, hooks) are kept apart
from the JSON and referenced by index so the server can store them without unpickling.

>>> g = WorkflowGraph()
>>> g.add_node("add", NodeKind.ELECTRON), g.add_node(":parameter:1", NodeKind.PARAMETER)
(0, 1)
>>> g.add_edge(1, 0, "x", EdgeKind.ARG, 0)
>>> WorkflowGraph.from_json(g.to_json(), g.blobs).edges[0].name
'x'
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, NamedTuple


class NodeKind(enum.StrEnum):
    """What a node does when it runs."""

    ELECTRON = "electron"
    PARAMETER = "parameter"
    LIST = "list"
    TUPLE = "tuple"
    DICT = "dict"
    GETITEM = "getitem"
    GETATTR = "getattr"
    SUBLATTICE = "sublattice"
    POSTPROCESS = "postprocess"


class EdgeKind(enum.StrEnum):
    """How a parent's output reaches its child."""

    ARG = "arg"
    KWARG = "kwarg"
    WAIT = "wait"


class _CheckedKinds(dict[Any, EdgeKind]):
    def __missing__(self, key: Any) -> EdgeKind:
        raise ValueError(f"{key!r} is not an edge kind ({', '.join(self)})")


PARAMETER_PREFIX = ":parameter:"
ELECTRON_LIST_PREFIX = ":electron_list:"
ELECTRON_DICT_PREFIX = ":electron_dict:"
SUBLATTICE_PREFIX = ":sublattice:"
POSTPROCESS_NAME = ":postprocess:reconstruct"  # Covalent 0.240's name of the result node


@dataclass(slots=True)
class Node:
    """One vertex: ``fn``, ``value`` and ``hooks`` index into the graph's blobs."""

    id: int
    name: str
    kind: NodeKind
    executor: str = "dask"
    fn: int | None = None
    value: int | None = None
    hooks: int | None = None
    fn_hash: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    # What the electron's executor object asks of Dask (``executors.TaskOptions.to_json``), and
    # the class of an executor object this engine does not run itself (a Covalent plugin's):
    # such a node runs only once the dispatcher maps ``executor`` to a named executor.
    options: dict[str, Any] = field(default_factory=dict)
    plugin: str = ""
    # The class of a custom executor (a BaseExecutor subclass): its object rides in the node's
    # hooks blob and its ``run`` runs the electron on the worker; it needs no mapping.
    custom: str = ""

    def to_json(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if self.options:
            extra["options"] = self.options
        if self.plugin:
            extra["plugin"] = self.plugin
        if self.custom:
            extra["custom"] = self.custom
        return {
            "id": self.id,
            "name": self.name,
            "kind": str(self.kind),
            "executor": self.executor,
            "fn": self.fn,
            "value": self.value,
            "hooks": self.hooks,
            "fn_hash": self.fn_hash,
            "metadata": self.metadata,
            **extra,
        }


class Edge(NamedTuple):
    """``src``'s output feeds ``dst`` as positional ``index`` or keyword ``name``.

    A named tuple: made in a third of a frozen dataclass's time, once per edge on both sides
    (a 32x32 square has 32,000 edges, #23)."""

    src: int
    dst: int
    name: str
    kind: EdgeKind
    index: int | None = None  # type: ignore[assignment]  # (tuple.index, never called on an edge)

    def to_json(self) -> list[Any]:
        return [self.src, self.dst, self.name, str(self.kind), self.index]


@dataclass(slots=True)
class WorkflowGraph:
    """Nodes in id order, edges in insertion order, and the blobs they reference."""

    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    blobs: list[bytes] = field(default_factory=list)

    def add_node(self, name: str, kind: NodeKind, **fields: Any) -> int:
        node_id = len(self.nodes)
        self.nodes.append(Node(node_id, name, kind, **fields))
        return node_id

    def add_edge(
        self, src: int, dst: int, name: str, kind: EdgeKind, index: int | None = None
    ) -> None:
        self.edges.append(Edge(src, dst, name, kind, index))

    def add_blob(self, data: bytes) -> int:
        self.blobs.append(data)
        return len(self.blobs) - 1

    def parents(self) -> dict[int, list[Edge]]:
        """Incoming edges of every node, in insertion order."""
        out: dict[int, list[Edge]] = {n.id: [] for n in self.nodes}
        for e in self.edges:
            out[e.dst].append(e)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "nodes": [n.to_json() for n in self.nodes],
            "edges": [e.to_json() for e in self.edges],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], blobs: list[bytes]) -> WorkflowGraph:
        """Rebuild a graph; raises KeyError/TypeError/ValueError on a malformed body."""
        nodes = [
            Node(
                id=_int(n["id"]),
                name=_text(n["name"]),
                kind=NodeKind(n["kind"]),
                executor=_text(n.get("executor", "dask")),
                fn=_opt_int(n.get("fn")),
                value=_opt_int(n.get("value")),
                hooks=_opt_int(n.get("hooks")),
                fn_hash=_text(n.get("fn_hash", "")),
                metadata=_dict(n.get("metadata") or {}),
                options=_dict(n.get("options") or {}),
                plugin=_text(n.get("plugin", "")),
                custom=_text(n.get("custom", "")),
            )
            for n in data["nodes"]
        ]
        kinds = _EDGE_KINDS
        edges = [  # what the checks would pass as it is, unchecked: 3x as fast
            Edge(s, d, name, kinds[kind], idx)
            if type(s) is int and type(d) is int and type(name) is str and name.isascii()
            and (idx is None or type(idx) is int)
            else Edge(_int(s), _int(d), _text(name), kinds[kind], _opt_int(idx))
            for s, d, name, kind, idx in data["edges"]
        ]
        return cls(nodes, edges, blobs)


_EDGE_KINDS = _CheckedKinds({k.value: k for k in EdgeKind})


def _text(v: Any) -> str:
    """A name from JSON: a string, with characters UTF-8 cannot hold escaped."""
    if not isinstance(v, str):
        raise TypeError(f"expected a string, got {type(v).__name__}")
    return v if v.isascii() else v.encode("utf-8", "backslashreplace").decode()[:10_000]


def _dict(v: Any) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise TypeError(f"expected an object, got {type(v).__name__}")
    return v


def _int(v: Any) -> int:
    if type(v) is not int:
        raise TypeError(f"expected an integer, got {v!r}")
    return v


def _opt_int(v: Any) -> int | None:
    if v is None or type(v) is int:
        return v
    raise TypeError(f"expected an integer or null, got {v!r}")
