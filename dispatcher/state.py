"""Dispatch and node statuses: which transitions exist, the store updates that make them, and
the one rule for a dispatch's final status (``dispatch_ended``). What happens when is decided
by a running dispatch's state machine (``machine``); this module says what may be written.

    dispatch   NEW_OBJECT --start--> RUNNING --finish--> COMPLETED | FAILED | CANCELLED
               NEW_OBJECT --(could not be submitted)--> FAILED
    node       NEW_OBJECT --> RUNNING --> COMPLETED | FAILED | CANCELLED
               NEW_OBJECT --> COMPLETED | FAILED | CANCELLED   (a quick node, a never-run cancel)
               RUNNING --> NEW_OBJECT                          (resume: its run died with the server)

A terminal status never changes. Events come in (``node_running``, ``node_completed``, ...)
and ``NodeUpdate`` / ``DispatchUpdate`` records go out to the store, which applies each one
only where ``entry_guard`` allows it (its SQL is built here too), so a late report never
overwrites what the API has already reported.

>>> entry_guard(Status.RUNNING, NODE_TRANSITIONS)
"status IN ('NEW_OBJECT')"
>>> may_enter(Status.COMPLETED, Status.CANCELLED, NODE_TRANSITIONS)
False
"""

from __future__ import annotations

from dataclasses import dataclass

from covalent.wire import TERMINAL, Status

__all__ = ["DISPATCH_TRANSITIONS", "DispatchUpdate", "NODE_TRANSITIONS", "NodeUpdate", "PENDING",
           "Status", "TERMINAL", "entry_guard", "is_terminal", "may_enter", "settled", "sql_list",
           "transition_guard"]

PENDING = Status.NEW_OBJECT
_ENDS = TERMINAL  # the one definition of "terminal" (covalent.wire), for dispatches and nodes

# status -> the statuses it may move to
DISPATCH_TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.NEW_OBJECT: frozenset({Status.RUNNING, Status.FAILED}),
    Status.RUNNING: frozenset({Status.RUNNING}) | _ENDS,  # RUNNING again: resumed
}
NODE_TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.NEW_OBJECT: frozenset({Status.RUNNING}) | _ENDS,
    Status.RUNNING: frozenset({Status.NEW_OBJECT}) | _ENDS,
}


def is_terminal(status: str | None) -> bool:
    return status in TERMINAL


def may_enter(current: str, target: str, table: dict[Status, frozenset[Status]]) -> bool:
    """True if ``current`` may move to ``target`` (a terminal status moves nowhere)."""
    return Status(target) in table.get(Status(current), frozenset())


def transition_guard(source: Status, target: Status, table: dict[Status, frozenset[Status]]) -> str:
    """SQL condition for one transition (``source`` to ``target``), which must exist.

    >>> transition_guard(Status.NEW_OBJECT, Status.RUNNING, DISPATCH_TRANSITIONS)
    "status = 'NEW_OBJECT'"
    """
    if not may_enter(source, target, table):
        raise ValueError(f"no transition {source} -> {target}")
    return f"status = '{source.value}'"


def entry_guard(target: str, table: dict[Status, frozenset[Status]]) -> str:
    """SQL condition on the ``status`` column: the row may move to ``target``."""
    sources = sorted(s for s, targets in table.items() if Status(target) in targets)
    return f"status IN {sql_list(sources)}"


def sql_list(statuses: list[Status] | frozenset[Status]) -> str:
    """``('A','B')`` for an SQL ``IN`` (statuses are fixed identifiers, never user text).

    >>> sql_list([Status.COMPLETED, Status.FAILED])
    "('COMPLETED','FAILED')"
    """
    return "(" + ",".join(f"'{s.value}'" for s in sorted(statuses)) + ")"


@dataclass(slots=True)
class NodeUpdate:
    """New facts about one node; None fields are left as they are."""

    dispatch_id: str
    node_id: int
    status: Status | None = None
    start_time: str | None = None
    end_time: str | None = None
    output: bytes | None = None
    error: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    sub_dispatch_id: str | None = None
    preview: str | None = None  # a short repr of the output, made on the worker
    # An output the worker stored itself: its content address and size (the store knows where
    # an address lives; nothing a worker says names a place: #21); ``output`` holds small ones.
    output_ref: str | None = None
    output_size: int | None = None
    gather: str | None = None  # a gathering node's output: JSON naming the parts it is made of
    reused_from: str | None = None  # the dispatch whose stored output this node reuses
    attempts: int | None = None  # how many times a task ran it (more than 1: its executor's retries)
    worker: str | None = None  # the Dask worker that ran it (its address), for the UI's timeline


@dataclass(slots=True)
class DispatchUpdate:
    """New facts about one dispatch; None fields are left as they are."""

    dispatch_id: str
    status: Status | None = None
    start_time: str | None = None
    end_time: str | None = None
    error: str | None = None
    result: bytes | None = None


# -- events in, updates out ----------------------------------------------------------------

def node_running(dispatch_id: str, node_id: int, start: str, worker: str | None = None) -> NodeUpdate:
    """A worker reports a node has been running for a while."""
    return NodeUpdate(dispatch_id, node_id, status=Status.RUNNING, start_time=start, worker=worker)


def node_completed(dispatch_id: str, node_id: int, output: bytes | None, start: str, end: str,
                   stdout: str | None = "", stderr: str | None = "", preview: str | None = None,
                   ref: str | None = None, size: int | None = None,
                   reused_from: str | None = None,
                   attempts: int | None = None, worker: str | None = None,
                   sub_dispatch_id: str | None = None) -> NodeUpdate:
    """A completed node: its output inline (``output``) or stored by its worker (``ref``), or
    the output of dispatch ``reused_from`` (a redispatch reusing results)."""
    return NodeUpdate(dispatch_id, node_id, status=Status.COMPLETED, start_time=start or None,
                      end_time=end, output=output, stdout=stdout, stderr=stderr, preview=preview,
                      output_ref=ref, output_size=size,
                      reused_from=reused_from, attempts=attempts, worker=worker,
                      sub_dispatch_id=sub_dispatch_id)


def node_gathered(dispatch_id: str, node_id: int, gather: str, stamp: str,
                  preview: str) -> NodeUpdate:
    """A gathering node whose parts all completed: recorded as the list of its parts."""
    return NodeUpdate(dispatch_id, node_id, status=Status.COMPLETED, start_time=stamp,
                      end_time=stamp, gather=gather, preview=preview)


def node_failed(dispatch_id: str, node_id: int, error: str, end: str, start: str = "",
                stdout: str | None = None, stderr: str | None = None,
                attempts: int | None = None, worker: str | None = None) -> NodeUpdate:
    return NodeUpdate(dispatch_id, node_id, status=Status.FAILED, start_time=start or None,
                      end_time=end, error=error, stdout=stdout, stderr=stderr, attempts=attempts,
                      worker=worker)


def node_retrying(dispatch_id: str, node_id: int, attempts: int) -> NodeUpdate:
    """A run of a node failed and Dask runs it again (its executor's retries): its status
    stays as it is, the count of attempts grows (``attempts``: the one starting included)."""
    return NodeUpdate(dispatch_id, node_id, attempts=attempts)


def node_cancelled(dispatch_id: str, node_id: int, end: str) -> NodeUpdate:
    return NodeUpdate(dispatch_id, node_id, status=Status.CANCELLED, end_time=end)


def node_reset(dispatch_id: str, node_id: int) -> NodeUpdate:
    """A node that was RUNNING when the server died will run again."""
    return NodeUpdate(dispatch_id, node_id, status=Status.NEW_OBJECT)


def tries_said(attempts: int | None) -> str:
    """What a failed node's error says of its attempts: nothing for one.

    >>> tries_said(1), tries_said(3)
    ('', ' (failed 3 attempts)')
    """
    return f" (failed {attempts} attempts)" if attempts and attempts > 1 else ""


def dispatch_started(dispatch_id: str, start: str) -> DispatchUpdate:
    return DispatchUpdate(dispatch_id, status=Status.RUNNING, start_time=start)


def dispatch_ended(dispatch_id: str, failed: dict[int, str], names: list[str],
                   cancelled: bool, end: str, result: bytes | None,
                   unrecorded: str | None = None) -> DispatchUpdate:
    """The dispatch's final record, decided here only: FAILED naming each failed node (or
    the outputs that could not be recorded), else CANCELLED if asked, else COMPLETED with its
    result. ``failed`` maps node ids (-1: the dispatcher) to errors."""
    if failed:
        lines = [f"Node {i} ({names[i] if i >= 0 else 'dispatcher'}) failed: {msg}"
                 for i, msg in sorted(failed.items())]
        return DispatchUpdate(dispatch_id, status=Status.FAILED, end_time=end, error="\n".join(lines))
    if unrecorded is not None:
        return DispatchUpdate(dispatch_id, status=Status.FAILED, end_time=end,
                              error=f"some nodes could not be recorded: {unrecorded}")
    if cancelled:
        return DispatchUpdate(dispatch_id, status=Status.CANCELLED, end_time=end)
    return DispatchUpdate(dispatch_id, status=Status.COMPLETED, end_time=end, result=result)


def settled(update: DispatchUpdate, unrecorded: str | None) -> DispatchUpdate:
    """A final record written after some of the dispatch's updates could not be: a
    COMPLETED decided before those writes failed becomes FAILED (the rule of ``dispatch_ended``)."""
    if update.status != Status.COMPLETED or unrecorded is None:
        return update
    again = dispatch_ended(update.dispatch_id, {}, [], False, update.end_time or "", None, unrecorded)
    return DispatchUpdate(update.dispatch_id, status=again.status, start_time=update.start_time,
                          end_time=update.end_time, error=again.error)


def dispatch_not_submitted(dispatch_id: str, reason: str, end: str) -> DispatchUpdate:
    return DispatchUpdate(dispatch_id, status=Status.FAILED, end_time=end,
                          error=f"the dispatcher could not submit this dispatch: {reason}")
