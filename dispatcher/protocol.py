"""The task protocol between the dispatcher and its Dask workers.

The dispatcher compiles each node into ``run_node(NodeSpec, *parent_outcomes)``. The worker
reports how the node ended as an *outcome event* (``OUTCOME_TOPIC``, a msgpack dict, see
``outcome_completed`` / ``outcome_failed``) that it logs before its task returns, so the event
reaches the scheduler ahead of the task's completion on the same stream: if the worker dies,
both are lost together and Dask runs the node again. Large outputs are written to the blob
store by the worker itself and the event carries only their address; the dispatcher never
fetches a task's result, and never unpickles a user value.

Between tasks, values travel inside Dask as ``NodeOutcome`` (a sink, which nothing in the
graph consumes, returns a tiny ``NodeDone`` instead). A node that has no output (it failed, was
cancelled, or lies downstream of one that did) returns a ``NoOutput`` marker rather than
raising: Dask never sees a user's failure, so it never releases the independent branches a
failure must not stop (fail-slow, issue #20); the tasks downstream return the marker too,
without running. None of this imports the server: this module and ``dispatcher.worker`` are
all a worker needs.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import cloudpickle

from covalent.wire import PREVIEW_LIMIT, Layout, preview

__all__ = ["GatherSpec", "INLINE_OUTPUT_MAX", "NoOutput", "NodeDone", "NodeOutcome", "NodeSpec",
           "NodeTaskError", "OUTCOME_TOPIC", "PREVIEW_LIMIT", "START_TOPIC", "now_iso",
           "outcome_completed", "outcome_failed", "preview", "runtime_versions"]

START_TOPIC = "covalent-node-start"  # a node has run for a while: {"d", "n", "t"}
OUTCOME_TOPIC = "covalent-outcome"  # a node ended: see outcome_completed / outcome_failed
INLINE_OUTPUT_MAX = 4 * 1024  # outputs up to this size ride in the event; larger go to the store


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def runtime_versions() -> dict[str, str]:
    """What decides whether this process can load a client's pickles."""
    return {"python": platform.python_version(), "cloudpickle": cloudpickle.__version__}


@dataclass(frozen=True, slots=True)
class GatherSpec:
    """A gathering parent (list, tuple, dict) gathered in place from its own parents.

    Its task argument is the list of its parents' outcomes, in edge order; ``inner`` says which
    of those are themselves gathered in place.
    """

    kind: str
    extra: bytes | None  # the dict's pickled keys
    layout: Layout
    inner: tuple[GatherSpec | None, ...]


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """What a worker needs to run one node; ``layout`` describes each parent argument.

    ``gathers`` (empty, or one entry per parent) marks the parents gathered in place; ``sink``
    says no task consumes this node's value, so its task returns a ``NodeDone``. ``executor``
    names the node's executor; ``time_limit`` (seconds per attempt, 0: none), ``retries``
    (attempts after a failed one) and ``pip`` (packages to install on the worker first) come
    from its options.
    """

    dispatch_id: str
    node_id: int
    name: str
    kind: str
    fn: bytes | None
    value: bytes | None
    hooks: bytes | None
    layout: Layout
    gathers: tuple[GatherSpec | None, ...] = ()
    sink: bool = False
    executor: str = "dask"
    time_limit: float = 0.0
    pip: tuple[str, ...] = ()
    retries: int = 0
    generation: int = 1  # the submission it belongs to (a later one may supersede it)


class NodeOutcome:
    """A node's value as it passes between tasks; pickled (for another worker) as bytes."""

    __slots__ = ("node_id", "data", "_value", "_loaded")

    def __init__(self, node_id: int, data: bytes | None, value: Any = None,
                 loaded: bool = False) -> None:
        self.node_id = node_id
        self.data = data  # the pickled value, if it is kept (small values)
        self._value = value
        self._loaded = loaded

    @property
    def value(self) -> Any:
        if not self._loaded:
            assert self.data is not None
            self._value = cloudpickle.loads(self.data)
            self._loaded = True
        return self._value

    def __reduce__(self) -> tuple[Any, ...]:
        data = self.data if self.data is not None else cloudpickle.dumps(self._value)
        return (NodeOutcome, (self.node_id, data))

    def __sizeof__(self) -> int:
        return (len(self.data) if self.data is not None else 0) + 200


@dataclass(frozen=True, slots=True)
class NodeDone:
    """What a sink's task returns: nothing in the graph needs its value (it is stored)."""

    node_id: int


@dataclass(frozen=True, slots=True)
class NoOutput:
    """What the task of a node without an output returns: it failed, was cancelled, or lies
    downstream of such a node. ``error`` set: a stored output could not be read, and the
    consumer fails with that error instead of being skipped."""

    node_id: int
    error: str | None = None


class NodeTaskError(Exception):
    """A node failed on its worker; every field is a string so it pickles anywhere."""

    def __init__(self, node_id: int, error_type: str, message: str) -> None:
        super().__init__(node_id, error_type, message)
        self.node_id = node_id
        self.error_type = error_type
        self.message = message

    def __str__(self) -> str:
        return f"node {self.node_id} failed: {self.error_type}: {self.message}"


def outcome_completed(spec: NodeSpec, start: str, end: str, stdout: str, stderr: str,
                      shown: str, inline: bytes | None = None, ref: str | None = None,
                      size: int = 0, attempts: int = 1) -> dict[str, Any]:
    """The event of a completed node: its output inline, or the content address under which
    the worker stored it (the dispatcher derives where that is itself: #21)."""
    return {"d": spec.dispatch_id, "n": spec.node_id, "s": "COMPLETED", "t0": start, "t1": end,
            "out": stdout, "err": stderr, "pv": shown, "data": inline, "ref": ref, "size": size,
            "a": attempts}


def outcome_failed(spec: NodeSpec, start: str, end: str, stdout: str, stderr: str,
                   error_type: str, message: str, detail: str, attempts: int = 1,
                   retrying: bool = False) -> dict[str, Any]:
    """The event of a failed node (``retrying``: an attempt its retries run again): the
    error and what it printed."""
    return {"d": spec.dispatch_id, "n": spec.node_id, "s": "RETRYING" if retrying else "FAILED",
            "t0": start, "t1": end, "out": stdout, "err": stderr, "et": error_type,
            "msg": message, "tb": detail, "a": attempts}
