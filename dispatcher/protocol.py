"""The task protocol between the dispatcher and its Dask workers.

The dispatcher compiles each node into ``run_node(NodeSpec, *parent_outcomes)``; a worker
answers with a ``NodeOutcome`` or raises ``NodeTaskError``. Both pickle as bytes and strings
only, so the dispatcher never unpickles a user value, and both import nothing of the server:
this module and ``dispatcher.worker`` are all a worker needs.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import cloudpickle

from covalent.wire import PREVIEW_LIMIT, Layout, preview

__all__ = ["GatherSpec", "NodeOutcome", "NodeSpec", "NodeTaskError", "PREVIEW_LIMIT", "START_TOPIC",
           "now_iso", "preset_outcome", "preview", "runtime_versions"]

START_TOPIC = "covalent-node-start"  # worker events: a node has run for a while


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

    ``gathers`` (empty, or one entry per parent) marks the parents gathered in place.
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


class NodeOutcome:
    """A node's output: pickled ``data`` plus the value itself while it stays on one worker,
    and ``preview``, a short ``repr`` made on the worker (the server never unpickles)."""

    __slots__ = ("node_id", "data", "_value", "_loaded", "stdout", "stderr", "start", "end",
                 "preview")

    def __init__(self, node_id: int, data: bytes, value: Any = None, loaded: bool = False,
                 stdout: str = "", stderr: str = "", start: str = "", end: str = "",
                 preview: str = "") -> None:
        self.node_id = node_id
        self.data = data
        self._value = value
        self._loaded = loaded
        self.stdout = stdout
        self.stderr = stderr
        self.start = start
        self.end = end
        self.preview = preview

    @property
    def value(self) -> Any:
        if not self._loaded:
            self._value = cloudpickle.loads(self.data)
            self._loaded = True
        return self._value

    def __reduce__(self) -> tuple[Any, ...]:
        # Only bytes and strings cross the wire: the receiver never unpickles the user value.
        return (NodeOutcome, (self.node_id, self.data, None, False, self.stdout, self.stderr,
                              self.start, self.end, self.preview))

    def __sizeof__(self) -> int:
        return len(self.data) + len(self.stdout) + len(self.stderr) + 200


class NodeTaskError(Exception):
    """A node failed on its worker; every field is a string so it pickles anywhere."""

    def __init__(self, node_id: int, error_type: str, message: str, detail: str = "",
                 stdout: str = "", stderr: str = "", start: str = "", end: str = "") -> None:
        super().__init__(node_id, error_type, message, detail, stdout, stderr, start, end)
        self.node_id = node_id
        self.error_type = error_type
        self.message = message
        self.detail = detail
        self.stdout = stdout
        self.stderr = stderr
        self.start = start
        self.end = end

    def __str__(self) -> str:
        return f"node {self.node_id} failed: {self.error_type}: {self.message}"


def preset_outcome(node_id: int, data: bytes, start: str, end: str) -> NodeOutcome:
    """Task body for a node whose output is already known (reuse, resume after restart)."""
    return NodeOutcome(node_id, data, start=start, end=end)

