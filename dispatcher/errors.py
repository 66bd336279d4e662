"""Errors the dispatcher maps to HTTP answers.

    DispatcherError                 500 (never raised on purpose)
    ├── DispatchNotFound (LookupError)         404
    ├── NodeNotFound (LookupError)             404
    ├── TriggerNotFound (LookupError)          404
    ├── UserNotFound (LookupError)             404
    ├── UserExists (ValueError)                409 (a user name is never reused, revoked or not)
    ├── InvalidRequest (ValueError)            400
    ├── PayloadTooLarge (ValueError)           413
    ├── DispatchState (RuntimeError)           409
    ├── IncompatibleClient (RuntimeError)      409
    ├── Unauthorized (PermissionError)         401
    ├── Forbidden (PermissionError)            403 (foreign Host or Origin)
    ├── UnsupportedMediaType (ValueError)      415 (a content type a web page could send)
    ├── Unavailable (RuntimeError)             503 + Retry-After
    │   ├── StoreBusy                          503 (locked by another process, connections all
    │   │                                           taken, a statement over its time limit)
    │   └── StoreUnavailable                   503 (the database cannot be reached: restarting)
    ├── UnknownExecutor (LookupError)          400 (fails the dispatch: an executor name not mapped)
    ├── StorageFull (OSError)                  507
    │   └── StoreFull                          507 (the database or the blob store is full)
    └── StoreError (RuntimeError)              500 (anything else a database refuses)
        └── StoreVersionError                  500 (a database of a newer version: refused at start)

Each store (``dispatcher.store``) raises its own driver's errors as ``StoreBusy``, ``StoreFull``,
``StoreUnavailable`` or ``StoreError``: nothing outside the store knows which database it runs on.
The body of each answer is ``{"error": <class name>, "message": str(exc)}``; the SDK maps the
name back to its own exception class (``Unavailable`` for both 503s, ``StorageFull`` for 507).
"""

from __future__ import annotations

from typing import ClassVar


class NotRunningHere(Exception):
    """A cancel this replica was asked to carry out, for a dispatch it no longer runs (nor any
    record of it ended): left for the replica that runs it now (never an HTTP answer)."""


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


class UserNotFound(DispatcherError, LookupError):
    status = 404


class UserExists(DispatcherError, ValueError):
    status = 409


class InvalidRequest(DispatcherError, ValueError):
    status = 400


class PayloadTooLarge(DispatcherError, ValueError):
    status = 413


class DispatchState(DispatcherError, RuntimeError):
    status = 409

    @classmethod
    def ended(cls, dispatch_id: str, status: str) -> DispatchState:
        """A cancel of a dispatch that had already ended ``status``: what it says, wherever
        it is found (on this replica, or answered by the one that ran the dispatch)."""
        return cls(f"dispatch {dispatch_id} already ended {status}; nothing to cancel")


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


class StoreError(DispatcherError, RuntimeError):
    """The store refused a write or a read for a reason of its own (not busy, not full)."""

    code: ClassVar[str] = "InternalError"  # the answer's ``error`` (a contract: covalent.wire)


class StoreBusy(Unavailable, StoreError):
    """The store is busy: locked by another process, every connection taken, or a statement
    ran past its time limit. Nothing was written; the same request may be sent again."""

    code: ClassVar[str] = "Unavailable"

    def __init__(self, message: str = "the dispatcher's store is busy; retry shortly") -> None:
        super().__init__(message)


class StoreUnavailable(Unavailable, StoreError):
    """The database cannot be reached (restarting, network): nothing was written."""

    code: ClassVar[str] = "Unavailable"

    def __init__(self, message: str = "the dispatcher's database cannot be reached; retry "
                 "shortly") -> None:
        super().__init__(message)


class StoreFull(StorageFull, StoreError):
    """The database or the blob store has no room: nothing was half-written."""

    code: ClassVar[str] = "StorageFull"
    status = 507


class StoreVersionError(StoreError):
    """The data dir or database was written by a newer version (or a migration failed): the
    server refuses to start and leaves it as it is."""


def is_busy_error(exc: BaseException) -> bool:
    """True when the store is busy or unreachable for now: retry, nothing is wrong."""
    return isinstance(exc, StoreBusy | StoreUnavailable)


def is_disk_error(exc: BaseException) -> bool:
    """True for a full store, and for the errors a full disk or a file size limit raises."""
    import errno

    if isinstance(exc, StoreFull):
        return True
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
