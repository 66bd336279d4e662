"""Fetch results and cancel dispatches: ``get_result`` and ``cancel``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

from .. import _client, _progress, wire
from ..config import client_config
from ..wire.status import Status
from ..errors import (DispatcherBusyError, DispatcherUnavailableError, DispatchStateError,
                      MissingLatticeRecordError, ServerNotYoursError)
from .result import Result

_LONG_POLL_S = 30.0
_RECONNECT_S = 30.0  # how long get_result(wait=True) waits for a dispatcher that went away
T = TypeVar("T")


def _check_id(dispatch_id: Any) -> str:
    """Return the id quoted for use in a URL path; raise TypeError if it is not a string."""
    if not isinstance(dispatch_id, str) or not dispatch_id:
        raise TypeError(f"dispatch_id must be a non-empty string, got {dispatch_id!r}")
    if len(dispatch_id) > _ID_MAX:  # no request line could carry it: the server never sees it
        raise MissingLatticeRecordError(
            "DispatchNotFound", f"no dispatch has the id {dispatch_id[:40]!r}… ({len(dispatch_id)} "
            "characters; a dispatch id is a UUID such as ct.dispatch returns)", 404)
    return quote(dispatch_id, safe="")


_ID_MAX = 1000


def get_result(
    dispatch_id: str,
    wait: bool = False,
    dispatcher_addr: str | None = None,
    status_only: bool = False,
    *,
    results_dir: str | None = None,
    workflow_output: bool = True,
    intermediate_outputs: bool = True,
    sublattice_results: bool = True,
    progress: bool = False,
) -> Result | dict[str, Any]:
    """Get the result of a dispatch from the dispatcher.

    Args:
        dispatch_id: the id ``ct.dispatch`` returned.
        wait: block until the dispatch is COMPLETED, FAILED or CANCELLED. The server answers
            the moment it ends (long-poll), not on a polling interval; a dispatcher restarting
            meanwhile is waited for (up to 30 s).
        dispatcher_addr: ``host:port`` of the dispatcher; default from config.
        status_only: return only ``{"dispatch_id": ..., "status": Status}``.
        results_dir: accepted as Covalent takes it (where its client saved the downloaded
            assets); nothing is written there: outputs stay on the dispatcher until read.
        workflow_output: download the lattice's result (what it is made of) with the records.
        intermediate_outputs: node outputs may be read (each is downloaded when first read);
            with False nothing but the final result is ever downloaded.
        sublattice_results: nodes of sublattices give their child dispatch's Result.
        progress: with ``wait``, show one progress bar per electron name on stderr while
            waiting (plain lines when stderr is not a terminal). Silent by default.

    Returns:
        A ``Result`` (or the status dict with ``status_only``).

    Raises:
        DispatchNotFoundError (and MissingLatticeRecordError): no dispatch has that id.
        DispatcherUnavailableError: no server answers at the address.

    Example:
        >>> result = ct.get_result(dispatch_id, wait=True)  # doctest: +SKIP
        >>> result.result                                    # doctest: +SKIP
    """
    quoted = _check_id(dispatch_id)
    cfg = client_config(dispatcher_addr)
    path = f"/dispatches/{quoted}"
    patience = Patience() if wait else None  # wait=True rides out a dispatcher restart
    if wait and progress:
        _progress.watch(cfg, dispatch_id)
    parts = "result" if workflow_output else "none"

    def fetch(wait: float = 0) -> tuple[dict[str, Any], list[bytes]]:
        query: dict[str, Any] = {"parts": parts, "gathers": "text"}  # parsed when needed
        if not wait:
            return wire.unpack(_client.request(cfg, "GET", path, query=query)[2])
        return wire.unpack(_client.request(cfg, "GET", path, query={**query, "wait": wait},
                                           timeout=wait + 30)[2])

    if status_only:
        status = (_wait_terminal(cfg, path, patience) if patience is not None else
                  Status(_client.request_json(cfg, "GET", path + "/status")["status"]))
        return {"dispatch_id": dispatch_id, "id": dispatch_id, "status": status}
    if patience is None:
        header, blobs = fetch()
    else:
        # One request for a dispatch that ends within a long poll: the answer that says it
        # ended carries its records (#23: a status poll and then a read cost a round trip
        # more). A longer one waits on the status, whose answers are small, then reads once.
        header, blobs = patience.call(lambda: fetch(_LONG_POLL_S))
        if not Status(header["dispatch"]["status"]).is_terminal:
            _wait_terminal(cfg, path, patience)
            header, blobs = patience.call(fetch)
    return Result._from_wire(header, blobs, cfg, dispatcher_addr,
                             intermediate_outputs=intermediate_outputs,
                             workflow_output=workflow_output,
                             sublattice_results=sublattice_results)


class Patience:
    """Retry a call while the dispatcher is down or busy (restarting, stopped and started
    again, its store locked), with backoff, for up to ``_RECONNECT_S`` seconds in a row."""

    def __init__(self) -> None:
        self.down_since: float | None = None
        self.delay = 0.1

    def call(self, fn: Callable[[], T]) -> T:
        while True:
            try:
                out = fn()
            except ServerNotYoursError:
                raise  # another user's process holds the address: waiting is no answer
            except (DispatcherUnavailableError, DispatcherBusyError):
                now = time.monotonic()
                self.down_since = self.down_since if self.down_since is not None else now
                if now - self.down_since > _RECONNECT_S:
                    raise
                time.sleep(self.delay)  # the server is down: nothing to be pushed from
                self.delay = min(self.delay * 2, 2.0)
                continue
            self.down_since, self.delay = None, 0.1
            return out


def _wait_terminal(cfg: Any, path: str, patience: Patience) -> Status:
    """Long-poll the status until it is terminal (the server answers when it ends)."""
    while True:
        body = patience.call(lambda: _client.request_json(
            cfg, "GET", path + "/status", query={"wait": _LONG_POLL_S}, timeout=_LONG_POLL_S + 30))
        status = Status(body["status"])
        if status.is_terminal:
            return status


def cancel(dispatch_id: str, task_ids: list[int] | int | None = None,
           dispatcher_addr: str | None = None) -> str:
    """Cancel a dispatch, or only the nodes ``task_ids`` (and so their descendants).

    Returns:
        The server's message, e.g. ``"Cancelled dispatch <id> (3 unfinished electrons)."``; for a
        dispatch that has ended (or was never started) it says so and nothing changes, as in
        Covalent, so a ``finally: ct.cancel(id)`` cannot fail because the dispatch won the race.

    Raises:
        DispatchNotFoundError: no dispatch has that id.
        NodeNotFoundError: the dispatch has no node of one of ``task_ids``.
    """
    quoted = _check_id(dispatch_id)
    if isinstance(task_ids, int):
        task_ids = [task_ids]
    if task_ids is not None and not all(isinstance(t, int) for t in task_ids):
        raise TypeError(f"task_ids must be node ids (integers), got {task_ids!r}")
    cfg = client_config(dispatcher_addr)
    body = json.dumps({"task_ids": task_ids or []}).encode()
    try:
        resp = _client.request_json(cfg, "POST", f"/dispatches/{quoted}/cancel", body=body)
    except DispatchStateError as exc:  # ended, or never started: nothing to cancel
        return exc.message[:1].upper() + exc.message[1:] + "."  # "Dispatch <id> already ended ..."
    return str(resp["message"])
