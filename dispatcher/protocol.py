"""The task protocol between the dispatcher and its Dask workers.

The dispatcher compiles each node into ``run_node(NodeSpec, *parent_outcomes)``. The worker
reports how the node ended as an *outcome event* (a msgpack dict, see ``outcome_completed`` /
``outcome_failed``) that travels with the task's own completion (``dispatcher.outcomes``), so
it reaches the dispatcher no later than the task's completion does: if the worker dies, both
are lost together and Dask runs the node again. Large outputs are written to the blob
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

import dataclasses
import functools
import operator
import pickle
import platform
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import cloudpickle
import msgpack

from covalent.wire import PREVIEW_LIMIT, Layout, preview

__all__ = ["GatherSpec", "INLINE_OUTPUT_MAX", "NoOutput", "NodeDone", "NodeOutcome", "NodeSpec",
           "NodeTaskError", "OUTCOME_TOPIC", "PREVIEW_LIMIT", "START_TOPIC", "now_iso",
           "outcome_completed", "outcome_failed", "pack_outcome", "preview", "runtime_versions",
           "unpack_outcome"]

START_TOPIC = "covalent-node-start"  # a node has run for a while: {"d", "n", "t"}
OUTCOME_TOPIC = "covalent-outcome"  # a node ended: see outcome_completed / outcome_failed
INLINE_OUTPUT_MAX = 4 * 1024  # outputs up to this size ride in the event; larger go to the store


def now_iso() -> str:
    """``datetime.now(UTC).isoformat()``, with the whole second formatted once per second
    (a node takes this two or three times; the full format cost as much as a small task's
    own work, #23).

    >>> datetime.fromisoformat(now_iso()).tzinfo is UTC
    True
    """
    now = time.time()
    second = int(now)
    micros = int((now - second) * 1_000_000)
    text = _second_text(second)
    return f"{text}.{micros:06d}+00:00" if micros else f"{text}+00:00"


@functools.lru_cache(maxsize=4)
def _second_text(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")


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

    def __reduce__(self) -> tuple[Any, ...]:
        # Its fields as one tuple: a dataclass's default pickling walks fields() per object,
        # which for 100,000 specs cost a second of the graph's submission (#23).
        return (NodeSpec, _spec_fields(self))


_spec_fields = operator.attrgetter(*(f.name for f in dataclasses.fields(NodeSpec)))


class NodeOutcome:
    """A node's value as it passes between tasks.

    Pickled for another worker as the value's own pickle, with protocol 5 and out-of-band
    buffers: the buffers of a large value (a NumPy array's memory) become frames of their own
    that Dask sends as they are, and the receiving worker's value is built on the received
    frames, without a copy (issue #23). A small value's pickle kept from storing it is sent
    as it is. Unpickled lazily, inside the consuming node's task, so a value that cannot be
    loaded there fails that node rather than the Dask task.
    """

    __slots__ = ("node_id", "data", "_value", "_loaded", "_buffers")

    def __init__(self, node_id: int, data: bytes | None, value: Any = None,
                 loaded: bool = False, buffers: list[Any] | None = None) -> None:
        self.node_id = node_id
        self.data = data  # the pickled value, if it is kept (small values)
        self._value = value
        self._loaded = loaded
        self._buffers = buffers  # out-of-band buffers of ``data`` (a received large value)

    @property
    def value(self) -> Any:
        if not self._loaded:
            assert self.data is not None
            self._value = cloudpickle.loads(self.data, buffers=self._buffers or ())
            self._loaded = True
            self.data = self._buffers = None  # the value holds what it needs of them
        return self._value

    def __reduce__(self) -> tuple[Any, ...]:
        if self.data is not None and not self._buffers:
            return (NodeOutcome, (self.node_id, self.data))
        if self._loaded:
            buffers: list[pickle.PickleBuffer] = []
            head = cloudpickle.dumps(self._value, protocol=5, buffer_callback=buffers.append)
            return (NodeOutcome, (self.node_id, head, None, False, buffers))
        return (NodeOutcome, (self.node_id, self.data, None, False, self._buffers))

    def __sizeof__(self) -> int:
        if self.data is not None:
            return len(self.data) + sum(memoryview(b).nbytes for b in self._buffers or ()) + 200
        from dask.sizeof import sizeof  # what Dask counts for memory and transfers

        return int(sizeof(self._value)) + 200


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


def pack_outcome(event: dict[str, Any]) -> dict[str, Any]:
    """An outcome event as it travels: ``{"o": <one msgpack blob>}``, which every hop (the
    worker's and the scheduler's comms, Dask's size estimates) passes on as opaque bytes, and to
    which the scheduler adds the address of the worker it came from (``"worker"``)."""
    packer = getattr(_packers, "packer", None)
    if packer is None:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True)
    return {"o": packer.pack(event)}


# One packer per thread: ``msgpack.packb`` makes a new one per call, whose 256 KiB buffer costs
# a worker an mmap and an munmap each time (Dask's nannies set MALLOC_TRIM_THRESHOLD_): 6 us
# against 0.6 for every node's outcome (#23). ``pack`` empties it after each call, also on error.
_packers = threading.local()


def unpack_outcome(msg: dict[str, Any]) -> dict[str, Any]:
    """The event of ``pack_outcome``, with the worker's address as the scheduler added it: never
    one the worker wrote itself (#21).

    >>> msg = pack_outcome({"n": 1, "data": b"x", "worker": "forged"})
    >>> unpack_outcome(msg), unpack_outcome(dict(msg, worker="tls://10.0.0.2:4001"))["worker"]
    ({'n': 1, 'data': b'x', 'worker': None}, 'tls://10.0.0.2:4001')
    """
    event: dict[str, Any] = msgpack.unpackb(msg["o"], raw=False)
    event["worker"] = msg.get("worker")
    return event
