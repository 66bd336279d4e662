"""The live state of one running dispatch: what each node is waiting for, in one structure.

Every node of a running dispatch has a ``NodeTrack``. Its ``role`` says how it runs:

- ``TASK``: a Dask task computes it; its worker reports the outcome by event.
- ``INLINED``: a small parameter (or known output) written into its consumers' task arguments;
  done at submit.
- ``GATHER``: a list, tuple, dict or the result, gathered in place by its consumers; recorded
  by the runner as the list of its parts once they have all completed.

The runner holds Dask futures only for the *sinks* (tasks whose value no task consumes): they
keep the graph alive, and Dask releases everything else as it would for a plain graph. When
some nodes are cancelled, the runner also *holds* the unfinished tasks feeding them (they still
run): each until its future ends or its outcome arrives, whichever comes first.

The invariants, checked by ``DispatchRun.check`` (the tests call it after the steps they take):
a TASK node has a key, and only a sink or a held task may have a future; a GATHER node's ``waiting_for``
counts its parents not yet COMPLETED (a failed parent means it is never gathered: fail-slow);
only a FAILED node has an error; every node with an outcome has ``done`` set.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass, field
from typing import Any

from distributed import Future

from covalent.wire import Edge, NodeKind, WorkflowGraph, shorten

Key = tuple[str, int]


class Role(enum.Enum):
    TASK = "task"
    INLINED = "inlined"
    GATHER = "gather"


class Outcome(enum.Enum):
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"  # never ran: an ancestor failed, or it was cancelled


@dataclass(slots=True)
class NodeTrack:
    """One node of a running dispatch."""

    role: Role
    key: Key | None = None  # TASK: its Dask key
    outcome: Outcome = Outcome.WAITING
    failed: str | None = None  # FAILED: the error, for the dispatch's summary
    cancelled: bool = False
    waiting_for: int = 0  # GATHER: parents not COMPLETED yet
    feeds: list[int] = field(default_factory=list)  # the GATHER nodes it is a part of
    preview: str = ""  # a GATHER child's preview is made of its parts' previews
    retries: int = 0  # TASK: how many times Dask runs it again after a failure
    attempts: int = 0  # TASK: outcome events received (failed runs, then the last one)

    @property
    def done(self) -> bool:
        return self.outcome is not Outcome.WAITING


@dataclass(eq=False)
class DispatchRun:
    """The live state of one running dispatch (see the module docstring for its invariants)."""

    dispatch_id: str
    graph: WorkflowGraph
    nodes: list[NodeTrack]
    gather_parents: dict[int, list[Edge]] = field(default_factory=dict)  # GATHER: incoming edges
    by_key: dict[Key, int] = field(default_factory=dict)  # TASK key -> node id
    sinks: dict[int, Future[Any]] = field(default_factory=dict)  # the futures the runner holds
    # tasks held for cancelled consumers: the future, and an event set when the outcome arrives
    held: dict[int, tuple[Future[Any], asyncio.Event]] = field(default_factory=dict)
    cancel_requested: bool = False
    internal_error: str = ""  # the dispatcher's own failure, for the dispatch's summary
    waiter: asyncio.Task[None] | None = None

    @classmethod
    def plan(cls, dispatch_id: str, graph: WorkflowGraph, tasks: dict[int, Key],
             inlined: dict[int, bytes], gathers: list[int]) -> DispatchRun:
        """The tracks of a dispatch compiled into ``tasks``, ``inlined`` and ``gathers``."""
        nodes = [NodeTrack(Role.TASK, key=tasks[i]) if i in tasks
                 else NodeTrack(Role.GATHER) if i in gathers else NodeTrack(Role.INLINED)
                 for i in range(len(graph.nodes))]
        parents = graph.parents()
        for node_id in gathers:
            nodes[node_id].waiting_for = len(parents[node_id])
            for e in parents[node_id]:
                nodes[e.src].feeds.append(node_id)
        return cls(dispatch_id, graph, nodes, {i: parents[i] for i in gathers},
                   {k: i for i, k in tasks.items()})

    @property
    def postprocess_id(self) -> int:
        last = self.graph.nodes[-1]
        return last.id if last.kind is NodeKind.POSTPROCESS else -1

    @property
    def failed(self) -> dict[int, str]:
        """Node id -> error of every FAILED node."""
        return {i: t.failed for i, t in enumerate(self.nodes) if t.failed is not None}

    def check(self) -> None:
        """Assert the invariants of the module docstring."""
        parents = self.graph.parents()
        for i, t in enumerate(self.nodes):
            assert (t.key is not None) == (t.role is Role.TASK), (i, t)
            assert i not in self.sinks or t.role is Role.TASK, (i, t)
            assert i not in self.held or (t.role is Role.TASK and i not in self.sinks), (i, t)
            assert (t.failed is not None) == (t.outcome is Outcome.FAILED), (i, t)
            if t.role is Role.GATHER and not t.done:
                waiting = sum(self.nodes[e.src].outcome is not Outcome.COMPLETED for e in parents[i])
                assert t.waiting_for == waiting, (i, t, waiting)


def gather_preview(kind: str, metadata: dict[str, Any], previews: list[str],
                   limit: int = 200) -> str:
    """The preview of a gathering node, from its parents' previews (the server never unpickles).

    ``previews`` are in argument order; a dict's keys and the result's shape come from the
    SDK (``metadata["keys"]``, ``metadata["template"]`` with ``⟨i⟩`` for the i-th part).

    >>> gather_preview("list", {}, ["1", "'a'"])
    "[1, 'a']"
    >>> gather_preview("postprocess", {"template": "{'total': ⟨0⟩}"}, ["55"])
    "{'total': 55}"
    """
    if kind == "dict":
        keys = metadata.get("keys") or ["?"] * len(previews)
        text = "{" + ", ".join(f"{k}: {v}" for k, v in zip(keys, previews, strict=False)) + "}"
    elif kind == "postprocess" and isinstance(metadata.get("template"), str):
        text = metadata["template"]
        for i, p in enumerate(previews):
            text = text.replace(f"⟨{i}⟩", p)
    elif kind == "tuple":
        text = "(" + ", ".join(previews) + ("," if len(previews) == 1 else "") + ")"
    else:
        text = "[" + ", ".join(previews) + "]"
    return shorten(text, limit)  # cut between items, never inside a number (#24)


def descendants(graph: WorkflowGraph, roots: list[int]) -> set[int]:
    """``roots`` and every node downstream of them."""
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
