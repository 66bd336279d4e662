"""The live state of one running dispatch: what each node is waiting for, in one structure.

Every node of a running dispatch has a ``NodeTrack``. Its ``role`` says how it runs:

- ``TASK``: a Dask task computes it (or hands over a stored output, when preset); the runner
  holds its future until its outcome is recorded.
- ``INLINED``: a small parameter written into its consumers' task arguments; done at submit.
- ``GATHER``: a list, tuple, dict or the result, gathered in place by its consumers; recorded
  by the runner from its parents' pickled outputs once they are all done.

The invariants, checked by ``DispatchRun.check`` (the tests call it after every step they
take): a TASK node has a key, and only an unfinished TASK node may have a future; a GATHER
node's ``waiting_for`` counts its parents not yet COMPLETED (a failed parent means it is never
gathered: fail-slow); a node keeps its output exactly while it is COMPLETED and a GATHER child
that needs it has not been gathered nor cancelled; only a FAILED node has an error; the result
is set only once the ``:postprocess:`` node is COMPLETED.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass, field
from typing import Any

from distributed import Future

from covalent.wire import Edge, NodeKind, WorkflowGraph

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
    waiting_for: int = 0  # GATHER: parents not done yet
    feeds: list[int] = field(default_factory=list)  # the GATHER nodes it is a parent of
    unread_by: int = 0  # GATHER children not gathered yet: its output is kept until then
    output: bytes | None = None
    preview: str = ""  # kept with the output: a GATHER child's preview is made of it

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
    futures: dict[int, Future[Any]] = field(default_factory=dict)
    cancel_requested: bool = False
    result: bytes | None = None
    task: asyncio.Task[None] | None = None

    @classmethod
    def plan(cls, dispatch_id: str, graph: WorkflowGraph, tasks: dict[int, Key],
             inlined: dict[int, bytes], gathers: list[int]) -> DispatchRun:
        """The tracks of a dispatch compiled into ``tasks``, ``inlined`` and ``gathers``."""
        nodes = [NodeTrack(Role.TASK, key=tasks[i]) if i in tasks
                 else NodeTrack(Role.INLINED) if i in inlined else NodeTrack(Role.GATHER)
                 for i in range(len(graph.nodes))]
        parents = graph.parents()
        for node_id in gathers:
            nodes[node_id].waiting_for = len(parents[node_id])
            for e in parents[node_id]:
                nodes[e.src].feeds.append(node_id)
                nodes[e.src].unread_by += 1
        return cls(dispatch_id, graph, nodes, {i: parents[i] for i in gathers})

    @property
    def postprocess_id(self) -> int:
        last = self.graph.nodes[-1]
        return last.id if last.kind is NodeKind.POSTPROCESS else -1

    @property
    def failed(self) -> dict[int, str]:
        """Node id -> error of every FAILED node."""
        return {i: t.failed for i, t in enumerate(self.nodes) if t.failed is not None}

    def keep_output(self, node_id: int, output: bytes, preview: str) -> None:
        """Keep a done node's output (and preview) while a GATHER child still needs it."""
        if self.nodes[node_id].unread_by:
            self.nodes[node_id].output = output
            self.nodes[node_id].preview = preview

    def release_parts(self, node_id: int) -> None:
        """A GATHER node was gathered (or cancelled): its parents' outputs may go once no
        other GATHER child needs them."""
        for e in self.gather_parents[node_id]:
            parent = self.nodes[e.src]
            parent.unread_by -= 1
            if not parent.unread_by:
                parent.output, parent.preview = None, ""

    def check(self) -> None:
        """Assert the invariants of the module docstring."""
        parents = self.graph.parents()
        for i, t in enumerate(self.nodes):
            assert (t.key is not None) == (t.role is Role.TASK), (i, t)
            assert i not in self.futures or (t.role is Role.TASK and not t.done), (i, t)
            assert (t.failed is not None) == (t.outcome is Outcome.FAILED), (i, t)
            if t.role is Role.GATHER and not t.done:
                waiting = sum(self.nodes[e.src].outcome is not Outcome.COMPLETED for e in parents[i])
                assert t.waiting_for == waiting, (i, t, waiting)
            unread = sum(1 for c in t.feeds if not (self.nodes[c].done or self.nodes[c].cancelled))
            assert t.unread_by == unread, (i, t, unread)
            kept = t.outcome is Outcome.COMPLETED and t.unread_by > 0
            assert (t.output is not None) == kept, (i, t)
        post = self.postprocess_id
        assert self.result is None or self.nodes[post].outcome is Outcome.COMPLETED


class Completions:
    """The futures of one dispatch, handed out in batches as they complete.

    Pushed, not polled: each future's done-callback (run by Dask in its callback thread) hands
    it to the event loop. ``next_batch`` waits for the first completion, then lets more join
    for up to ``linger`` seconds: each fetch of outputs is a round trip through the scheduler,
    so fetching per node would cost the scheduler more than the node itself. The graph keeps
    running meanwhile; the linger only delays the record, and never at the end: once every
    future has completed the batch goes at once.
    """

    def __init__(self, futures: list[tuple[int, Future[Any]]]) -> None:
        self.loop = asyncio.get_running_loop()
        self.ready: list[tuple[int, Future[Any]]] = []
        self.outstanding = 0  # not yet handed out
        self.event = asyncio.Event()
        self.pending: set[asyncio.Task[None]] = set()
        for item in futures:
            self.watch(item)

    def watch(self, item: tuple[int, Future[Any]]) -> None:
        self.outstanding += 1
        if item[1].status == "lost":  # its output died with a worker; Dask computes it again
            task = asyncio.create_task(self._when_back(item))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)
        else:
            item[1].add_done_callback(lambda _: self._push_threadsafe(item))

    async def _when_back(self, item: tuple[int, Future[Any]]) -> None:
        try:
            await item[1]  # returns once the future has an outcome again
        except Exception:  # an error is an outcome too: the runner reads it from the future
            pass
        self._push(item)

    def _push_threadsafe(self, item: tuple[int, Future[Any]]) -> None:
        try:
            self.loop.call_soon_threadsafe(self._push, item)
        except RuntimeError:
            pass  # the loop closed (server shutdown): nobody tracks this dispatch any more

    def _push(self, item: tuple[int, Future[Any]]) -> None:
        self.ready.append(item)
        self.event.set()

    async def next_batch(self, linger: float, limit: int) -> list[tuple[int, Future[Any]]]:
        while not self.ready:
            self.event.clear()
            await self.event.wait()
        deadline = self.loop.time() + linger
        while len(self.ready) < min(limit, self.outstanding):
            left = deadline - self.loop.time()
            if left <= 0:
                break
            self.event.clear()
            try:
                await asyncio.wait_for(self.event.wait(), left)
            except TimeoutError:
                break
        batch, self.ready = self.ready[:limit], self.ready[limit:]
        self.outstanding -= len(batch)
        return batch


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
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
