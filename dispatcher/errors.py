"""Errors the dispatcher maps to HTTP answers.

    DispatcherError                 500 (never raised on purpose)
    ├── DispatchNotFound (LookupError)         404
    ├── NodeNotFound (LookupError)             404
    ├── TriggerNotFound (LookupError)          404
    ├── InvalidRequest (ValueError)            400
    ├── PayloadTooLarge (ValueError)           413
    ├── DispatchState (RuntimeError)           409
    ├── IncompatibleClient (RuntimeError)      409
    ├── Unauthorized (PermissionError)         401
    ├── Forbidden (PermissionError)            403 (foreign Host or Origin)
    ├── UnsupportedMediaType (ValueError)      415 (a content type a web page could send)
    ├── Unavailable (RuntimeError)             503 (store locked by another process, busy)
    ├── UnknownExecutor (LookupError)          400 (fails the dispatch: an executor name not mapped)
    └── StorageFull (OSError)                  507

The body of each answer is ``{"error": <class name>, "message": str(exc)}``; the SDK maps the
name back to its own exception class.
"""

from __future__ import annotations


class DispatcherError(Exception):
    """Root of every error the server maps to an HTTP answer."""

    status = 500


class DispatchNotFound(DispatcherError, LookupError):
    status = 404

    def __init__(self, dispatch_id: str) -> None:
        super().__init__(dispatch_id)
        self.dispatch_id = dispatch_id

    def __str__(self) -> str:
        return f"no dispatch with id {self.dispatch_id!r}"


class NodeNotFound(DispatcherError, LookupError):
    status = 404


class TriggerNotFound(DispatcherError, LookupError):
    status = 404


class InvalidRequest(DispatcherError, ValueError):
    status = 400


class PayloadTooLarge(DispatcherError, ValueError):
    status = 413


class DispatchState(DispatcherError, RuntimeError):
    status = 409


class Unauthorized(DispatcherError, PermissionError):
    status = 401


class Forbidden(DispatcherError, PermissionError):
    status = 403


class UnsupportedMediaType(DispatcherError, ValueError):
    status = 415


class Unavailable(DispatcherError, RuntimeError):
    """Try again shortly (the answer carries Retry-After)."""

    status = 503


class IncompatibleClient(DispatcherError, RuntimeError):
    """The client's Python or cloudpickle differs from the workers': its pickles would not load."""

    status = 409


class UnknownExecutor(DispatcherError, LookupError):
    """Electrons ask for executors the server does not map; raised at submit, where it fails
    the dispatch (recorded FAILED with this message, as are the nodes named)."""

    status = 400

    def __init__(self, message: str, node_ids: list[int]) -> None:
        super().__init__(message, node_ids)
        self.message = message
        self.node_ids = node_ids

    def __str__(self) -> str:
        return self.message


class StorageFull(DispatcherError, OSError):
    """The store cannot write (disk full, file size limit); nothing was half-written."""

    status = 507


def is_busy_error(exc: BaseException) -> bool:
    """True when another process holds the SQLite database locked: retry, nothing is wrong."""
    import sqlite3

    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        return "locked" in text or "busy" in text
    return False


def is_disk_error(exc: BaseException) -> bool:
    """True for the errors a full disk or a file size limit raises, from files or SQLite."""
    import errno
    import sqlite3

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return True
    if isinstance(exc, sqlite3.OperationalError | sqlite3.DatabaseError):
        text = str(exc).lower()
        return "full" in text or "disk i/o" in text
    return False
