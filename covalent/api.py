"""Low-level access to a dispatcher's REST API, for tools built on the SDK.

The ``covalent`` CLI and the dispatcher's workers use it (``call_with_hooks`` runs an electron
with its deps and hooks; sublattices submit child dispatches); scripts use ``ct.dispatch`` and
``ct.get_result``. Every failure is a ``covalent.errors`` exception.
"""

from __future__ import annotations

from typing import Any

from . import wire
from ._client import request, request_json
from ._deps import call_with_hooks
from ._dispatch import build_submission, submission_parts
from ._results_manager.result import Result
from .config import ClientConfig, client_config

__all__ = ["ClientConfig", "Result", "build_submission", "call_with_hooks", "client_config",
           "fetch_result", "request", "request_json", "submission_parts", "submit_frame"]


def submit_frame(cfg: ClientConfig, frame: bytes | list[bytes],
                 query: dict[str, Any] | None = None) -> str:
    """POST a framed dispatch (``build_submission``, or its ``submission_parts``); the id of
    the stored dispatch."""
    resp = request_json(cfg, "POST", "/dispatches", body=frame, content_type=wire.CONTENT_TYPE,
                        query=query)
    return str(resp["dispatch_id"])


def fetch_result(cfg: ClientConfig, dispatch_id: str, wait: float = 0) -> Result:
    """The dispatch's Result; with ``wait`` > 0, the server answers once it ends or after
    ``wait`` seconds, whichever comes first."""
    query: dict[str, Any] = {"parts": "result", "gathers": "text"}  # parsed when needed
    if wait:
        query["wait"] = wait
    _, _, data = request(cfg, "GET", f"/dispatches/{dispatch_id}", query=query, timeout=wait + 30)
    header, blobs = wire.unpack(data)
    return Result._from_wire(header, blobs, cfg, cfg.url)
