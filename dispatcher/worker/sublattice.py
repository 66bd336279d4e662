"""Run a sublattice node on a worker: build its graph there and run it as a child dispatch.

The child's graph is built from the sublattice's inputs at run time, so its shape may depend
on upstream outputs (a dynamic workflow). The child is submitted to the same dispatcher with
this node as its parent, and runs on the same cluster. While waiting, the task secedes from
the worker's thread pool so the child's tasks can use the thread (no deadlock, even nested).
It never rejoins the pool: its thread ends with the task, as in Dask's own example of
``secede``. ``rejoin`` waits for a slot and then counts the thread back in, so a cancel raised
in that thread at that moment (it is the node's) killed a thread the pool still counted: a
worker with one thread never ran a task again.

A poll of the child blocks in a socket read, where no exception lands: an interrupt (a cancel,
a time limit) also shuts that socket down (``interrupts.waking``), so it lands at once rather
than after the poll, which the watchdog's grace may not outlast; a poll lasts ``_POLL_S`` at
most, for a wake-up that came just before the read began. A node stopped so cancels its child,
which would otherwise run on for a parent that no longer waits for it. A dispatcher that goes
away meanwhile (restarted, on a cluster that outlives it) is waited for, up to 30 s in a row,
as ``get_result(wait=True)`` waits for it.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from typing import Any

from covalent._client import request_json, waker
from covalent._results_manager.results_manager import Patience
from covalent.api import ClientConfig, Result, fetch_result, submission_parts, submit_frame
from covalent.errors import DispatcherUnavailableError, DispatchStateError
from covalent.wire.status import Status

from ..protocol import NodeSpec
from .contact import worker_context
from .interrupts import TaskInterrupted, interrupts
from .limits import TimeLimitExceeded

log = logging.getLogger("covalent.worker")

_POLL_S = 5.0  # what ends a poll early is a wake-up; this bounds a missed one
ATTEMPT = threading.local()  # ``n``: which of the executor's attempts this thread runs now
_SECEDED = threading.local()  # ``done``: this thread left Dask's pool (until its task ends)
_CHILD = threading.local()  # ``running``: the child an attempt left without seeing it end
_CANCEL_WAIT_S = 5.0


def run_sublattice(spec: NodeSpec, lattice: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Dispatch ``lattice(*args, **kwargs)`` as a child of ``spec``'s node; return its result."""
    contact = worker_context()
    if not contact.url:
        raise RuntimeError("this worker does not know its dispatcher's address; cannot run a sublattice")
    cfg = ClientConfig(url=contact.url, token=contact.token)
    # The child's id follows from its parent node (and the executor's retry it is): if this
    # node runs again (its worker died, the dispatcher restarted), it finds the child already
    # submitted and waits for it instead of starting a second one (issue #11); a retry after
    # a failed child runs a child of its own (it was given the failed one back).
    attempt = getattr(ATTEMPT, "n", 1)
    left = getattr(_CHILD, "running", None) if attempt > 1 else None
    # A retry after an attempt that lost sight of its child (the dispatcher unreachable) waits
    # for that child again: a second one would run beside it.
    child_id = left or str(uuid.uuid5(
        uuid.NAMESPACE_URL, f"covalent:{spec.dispatch_id}/{spec.node_id}"
                            + (f"/{attempt}" if attempt > 1 else "")))
    _CHILD.running = child_id
    body = submission_parts(lattice, tuple(args), kwargs, dispatch_id=child_id, disable_run=False)
    try:
        submit_frame(cfg, body, {"parent": spec.dispatch_id, "parent_node": spec.node_id})
        result = _wait_seceded(cfg, child_id)
    except DispatcherUnavailableError as exc:  # (its own hint is for a user's shell)
        raise DispatcherUnreachable(cfg.url, child_id, exc.reason) from None
    except BaseException:  # stopped, and its child cancelled (see _wait_seceded)
        _CHILD.running = None
        raise
    _CHILD.running = None  # it ended: a retry runs a child of its own
    if result.status == "CANCELLED":  # someone cancelled the child itself: as in Covalent, its
        with interrupts.outside():  # node is CANCELLED too, not FAILED (what this raises next
            _cancel_node(cfg, spec)  # is then ignored: the node has ended)
    if result.status != "COMPLETED":
        raise RuntimeError(f"sublattice dispatch {child_id} ended {result.status}"
                           + (f": {result.error}" if result.error else ""))  # (no ": None")
    return result.result


class DispatcherUnreachable(ConnectionError):
    """This worker could not reach the dispatcher at the address it was given (at all, or for
    ``Patience``'s 30 s in a row while it waited on the child)."""

    def __init__(self, url: str, child_id: str, reason: str) -> None:
        super().__init__(url, child_id, reason)
        self.url, self.child_id, self.reason = url, child_id, reason

    def __str__(self) -> str:
        return (f"this worker could not reach the dispatcher at {self.url} to run sublattice "
                f"dispatch {self.child_id} ({self.reason}): the dispatcher there is gone, or "
                "the workers cannot reach that address (workers on other machines, replicas "
                "behind a load balancer: start the dispatcher with --public-url "
                "http://<host:port the workers reach>)")


def _wait_seceded(cfg: ClientConfig, child_id: str) -> Result:
    from distributed import secede

    if not getattr(_SECEDED, "done", False):  # once per task: a retry's second secede raised
        try:  # KeyError inside Dask's thread pool (a seceded thread ends with its task)
            with interrupts.outside():  # Dask's own steps: no cancel may land between them
                secede()
                _SECEDED.done = True
        except ValueError:
            pass  # not on a worker thread (called directly): just block
    patience = Patience()  # a dispatcher restarting (the cluster outlives it) is waited for
    try:
        with interrupts.waking(waker(cfg.url)):  # an interrupt ends the poll it waits in
            while True:  # its status (a few bytes) until it ends, then its Result once
                answer = patience.call(lambda: request_json(
                    cfg, "GET", f"/dispatches/{child_id}/status", query={"wait": _POLL_S},
                    timeout=_POLL_S + 30))
                if Status(answer["status"]).is_terminal:
                    return patience.call(lambda: fetch_result(cfg, child_id))
    except (TaskInterrupted, TimeLimitExceeded) as exc:  # stopped: its child stops too (not
        with interrupts.outside():  # when the dispatcher is away: this node runs again when it
            _cancel_child(cfg, child_id, exc)  # resumes, and waits for the child it left)
        raise


def _cancel_node(cfg: ClientConfig, spec: NodeSpec) -> None:
    """Cancel the sublattice's own node in its parent dispatch (and what waits for it); not
    confirmed (the dispatcher away, or slow), the node fails instead."""
    _ask_cancel(cfg, spec.dispatch_id, [spec.node_id], f"node {spec.node_id} of dispatch "
                f"{spec.dispatch_id} (its sublattice dispatch was cancelled)")


def _cancel_child(cfg: ClientConfig, child_id: str, why: BaseException) -> None:
    """Ask the dispatcher to cancel the child; waits a few seconds at most, well within the
    grace the watchdog gives this node (a cancel passed on to another replica is carried out
    there whether or not its answer comes back in time)."""
    _ask_cancel(cfg, child_id, [], f"sublattice dispatch {child_id} (its node stopped: "
                f"{type(why).__name__})")


def _ask_cancel(cfg: ClientConfig, dispatch_id: str, task_ids: list[int], what: str) -> None:
    """``POST /dispatches/<id>/cancel``, waiting ``_CANCEL_WAIT_S`` at most: a dispatch that
    ended meanwhile (or that another cancel reached first) is fine; no answer is logged."""
    try:
        request_json(cfg, "POST", f"/dispatches/{dispatch_id}/cancel",
                     body=json.dumps({"task_ids": task_ids}).encode(), timeout=_CANCEL_WAIT_S)
    except DispatchStateError:
        pass
    except Exception as err:  # the dispatcher is away, or slow to answer
        log.warning("cancel of %s not confirmed: %s", what, err)
