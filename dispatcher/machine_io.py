"""What goes into a dispatch's state machine (``machine``) and what comes out of it: events
(what happened) and instructions (what the ``Runner`` is to do), plain frozen records; and a
worker's outcome event read as a ``NodeEnded``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import state

Update = state.NodeUpdate | state.DispatchUpdate


# -- events --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class NodeStarted:
    node: int
    stamp: str
    worker: str | None = None  # its address, for the UI's timeline


@dataclass(frozen=True, slots=True)
class NodeEnded:
    """A worker's outcome event: ``status`` COMPLETED, FAILED or RETRYING (a failed attempt
    its executor's retries run again)."""

    node: int
    status: str
    start: str
    end: str
    attempts: int = 1
    stdout: str = ""
    stderr: str = ""
    preview: str | None = None
    data: bytes | None = None
    ref: str | None = None
    size: int | None = None
    error: str = ""  # FAILED / RETRYING: "Type: message"
    detail: str = ""  # FAILED: the traceback shown as the node's error
    worker: str | None = None  # the worker that ran it


@dataclass(frozen=True, slots=True)
class FuturesDone:
    """Every future of submission ``generation`` ended; ``erred`` maps nodes to the errors
    Dask raised for them; ``internal`` is the dispatcher's own failure to wait, if any."""

    generation: int
    stamp: str
    erred: Mapping[int, str] = field(default_factory=dict)
    internal: str = ""


@dataclass(frozen=True, slots=True)
class SubmitFailed:
    generation: int
    reason: str
    stamp: str
    nodes: Mapping[int, str] = field(default_factory=dict)  # node -> its own error


@dataclass(frozen=True, slots=True)
class CancelRequested:
    nodes: Sequence[int] | None  # None: the whole dispatch
    stamp: str


@dataclass(frozen=True, slots=True)
class RunningElsewhere:
    """The answer to ``FindRunning`` of ``generation``: which of its nodes a worker still
    runs (or ran a moment ago, its outcome on the way)."""

    generation: int
    nodes: frozenset[int]
    stamp: str


Event = NodeStarted | NodeEnded | FuturesDone | SubmitFailed | CancelRequested | RunningElsewhere


# -- instructions ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Record:
    updates: list[Update]


@dataclass(frozen=True, slots=True)
class Cancel:
    """Stop ``nodes`` on the cluster (interrupt them, kill what they started, never start
    them, drop their futures); ``whole``: the dispatch ended, drop all its futures."""

    nodes: list[int]
    whole: bool


@dataclass(frozen=True, slots=True)
class FindRunning:
    """Ask the workers which of ``nodes`` they still run; answer with ``RunningElsewhere``."""

    generation: int
    nodes: list[int]
    delay: float  # seconds to wait before asking (0: now)


@dataclass(frozen=True, slots=True)
class Submit:
    """Compile and submit ``nodes`` (the rest: completed ones by their stored outputs)."""

    generation: int
    nodes: frozenset[int]


@dataclass(frozen=True, slots=True)
class Finish:
    update: state.DispatchUpdate


Instruction = Record | Cancel | FindRunning | Submit | Finish


def ended_event(msg: Mapping[str, Any]) -> NodeEnded:
    """A worker's outcome event (``dispatcher.protocol``) as a ``NodeEnded``."""
    status = msg["s"]
    worker = msg.get("worker")  # the scheduler adds the reporting worker's address
    if status == "COMPLETED":
        return NodeEnded(int(msg["n"]), status, msg["t0"], msg["t1"], int(msg.get("a", 1)),
                         msg["out"], msg["err"], msg.get("pv"), msg.get("data"), msg.get("ref"),
                         msg.get("size"), worker=worker)
    return NodeEnded(int(msg["n"]), status, msg["t0"], msg["t1"], int(msg.get("a", 1)),
                     msg.get("out", ""), msg.get("err", ""),
                     error=f"{msg['et']}: {msg['msg']}", detail=msg.get("tb") or "", worker=worker)
