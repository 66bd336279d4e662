"""Fetch results and cancel dispatches: ``get_result`` and ``cancel``."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote

from .. import _client, wire
from .._config import client_config
from .._status import Status
from ..errors import DispatcherUnavailableError
from .result import Result

_LONG_POLL_S = 30.0
_RECONNECT_S = 30.0  # how long get_result(wait=True) waits for a dispatcher that went away


def _check_id(dispatch_id: Any) -> str:
    """Return the id quoted for use in a URL path; raise TypeError if it is not a string."""
    if not isinstance(dispatch_id, str) or not dispatch_id:
        raise TypeError(f"dispatch_id must be a non-empty string, got {dispatch_id!r}")
    return quote(dispatch_id, safe="")


def get_result(
    dispatch_id: str,
    wait: bool = False,
    dispatcher_addr: str | None = None,
    status_only: bool = False,
) -> Result | dict[str, Any]:
    """Get the result of a dispatch from the dispatcher.

    Args:
        dispatch_id: the id ``ct.dispatch`` returned.
        wait: block until the dispatch is COMPLETED, FAILED or CANCELLED. The server answers
            the moment it ends (long-poll), not on a polling interval.
        dispatcher_addr: ``host:port`` of the dispatcher; default from config.
        status_only: return only ``{"dispatch_id": ..., "status": Status}``.

    Returns:
        A ``Result`` (or the status dict with ``status_only``).

    Raises:
        DispatchNotFoundError: no dispatch has that id.
        DispatcherUnavailableError: no server answers at the address.

    Example:
        >>> result = ct.get_result(dispatch_id, wait=True)  # doctest: +SKIP
        >>> result.result                                    # doctest: +SKIP
    """
    quoted = _check_id(dispatch_id)
    cfg = client_config(dispatcher_addr)
    path = f"/dispatches/{quoted}"
    status = _wait_terminal(cfg, path, dispatch_id) if wait else None
    if status_only:
        if status is None:
            status = Status(_client.request_json(cfg, "GET", path + "/status")["status"])
        return {"dispatch_id": dispatch_id, "id": dispatch_id, "status": status}
    _, _, data = _client.request(cfg, "GET", path)
    header, blobs = wire.unpack(data)
    return Result._from_wire(header, blobs, dispatcher_addr)


def _wait_terminal(cfg: Any, path: str, dispatch_id: str) -> Status:
    """Long-poll the status until it is terminal; ride out a dispatcher restart.

    If the server stops answering after it has answered once (stopped, killed, restarting),
    this retries for up to ``_RECONNECT_S`` seconds, then raises DispatcherUnavailableError.
    """
    answered = False
    down_since: float | None = None
    delay = 0.1
    while True:
        try:
            body = _client.request_json(cfg, "GET", path + "/status",
                                        query={"wait": _LONG_POLL_S}, timeout=_LONG_POLL_S + 30)
        except DispatcherUnavailableError:
            if not answered:
                raise
            now = time.monotonic()
            down_since = down_since if down_since is not None else now
            if now - down_since > _RECONNECT_S:
                raise
            time.sleep(delay)  # the server is down: retry with backoff, bounded above
            delay = min(delay * 2, 2.0)
            continue
        answered, down_since, delay = True, None, 0.1
        status = Status(body["status"])
        if status.is_terminal:
            return status


def cancel(dispatch_id: str, task_ids: list[int] | int | None = None,
           dispatcher_addr: str | None = None) -> str:
    """Cancel a dispatch, or only the nodes ``task_ids`` (and so their descendants).

    Returns:
        The server's message, e.g. ``"Dispatch <id> cancelled."``.

    Raises:
        DispatchNotFoundError: no dispatch has that id.
    """
    quoted = _check_id(dispatch_id)
    if isinstance(task_ids, int):
        task_ids = [task_ids]
    if task_ids is not None and not all(isinstance(t, int) for t in task_ids):
        raise TypeError(f"task_ids must be node ids (integers), got {task_ids!r}")
    cfg = client_config(dispatcher_addr)
    body = json.dumps({"task_ids": task_ids or []}).encode()
    resp = _client.request_json(cfg, "POST", f"/dispatches/{quoted}/cancel", body=body)
    return str(resp["message"])
