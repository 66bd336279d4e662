"""Errors the SDK raises.

    CovalentError
    ├── WorkflowDefinitionError (ValueError)     the lattice cannot be built into a graph
    ├── SerializationError (TypeError)           an argument or function cannot be pickled
    ├── DispatcherUnavailableError (ConnectionError)   no server answers at the address
    │   └── ServerNotYoursError                  another local user's process answers there
    ├── OutputLoadError (RuntimeError)            a result this client cannot unpickle
    ├── ReservedRetvalKeywordError (RuntimeError)  a DepsCall asks for a reserved keyword
    ├── FileTransferError (OSError)              a file transfer failed (raised on the worker)
    ├── TaskRuntimeError (RuntimeError)          an executor's run() says its task failed
    ├── TaskCancelledError (RuntimeError)        an executor's run() says its task was cancelled
    └── DispatcherError                          the server refused a request (4xx/5xx)
        ├── DispatchNotFoundError (LookupError)
        │   └── MissingLatticeRecordError          Covalent's name for it
        ├── NodeNotFoundError (LookupError)
        ├── TriggerNotFoundError (LookupError)
        ├── InvalidRequestError (ValueError)
        ├── DispatchStateError (RuntimeError)    e.g. cancelling a finished dispatch
        ├── IncompatibleClientError (RuntimeError)  Python/cloudpickle differ from the workers'
        ├── UnauthorizedError (PermissionError)
        ├── ForbiddenError (PermissionError)      a foreign Host/Origin, or a request a web page could send
        ├── DispatcherBusyError (RuntimeError)    the store is busy: retry shortly
        ├── StoredDataLostError (LookupError)     a stored value is missing or damaged
        ├── IncompleteAnswerError (ConnectionError)  the answer was cut off
        └── StorageFullError (OSError)           the dispatcher's disk is full

Every error pickles (all constructor arguments go to ``super().__init__``).
"""

from __future__ import annotations


class CovalentError(Exception):
    """Root of every error the SDK raises."""


class WorkflowDefinitionError(CovalentError, ValueError):
    """The lattice function cannot be turned into a workflow graph."""


class SerializationError(CovalentError, TypeError):
    """A function or value of the workflow cannot be pickled on the client."""


class DispatcherUnavailableError(CovalentError, ConnectionError):
    """No dispatcher answers at the given address."""

    def __init__(self, address: str, reason: str = "") -> None:
        super().__init__(address, reason)
        self.address = address
        self.reason = reason

    def __str__(self) -> str:
        hint = "start it with `covalent start` or pass dispatcher_addr="
        return f"no Covalent dispatcher answers at {self.address} ({self.reason}); {hint}"


class ServerNotYoursError(DispatcherUnavailableError):
    """The process answering at the dispatcher's address on this machine belongs to another
    user: the SDK sends it neither the token nor anything else, and reads nothing from it."""

    def __init__(self, address: str, owner: str, reason: str = "") -> None:
        super().__init__(address, reason or f"it belongs to user {owner}, not to you")
        self.args = (address, owner, reason)  # (pickled as constructed)
        self.owner = owner

    def __str__(self) -> str:
        text = (f"the process listening at {self.address} "
                f"{self.args[2] or f'belongs to user {self.owner}, not to you'}: nothing was sent "
                "to it (not your token, not your workflow), and nothing it sent is read. Your "
                "dispatcher is not running there (start it with `covalent start`, or pass "
                "dispatcher_addr=)")
        if self.args[2]:
            return text
        return (f"{text}; if that user runs the dispatcher you mean to use, say so with "
                f"COVALENT_SERVER_USER={self.owner}")


class ReservedRetvalKeywordError(CovalentError, RuntimeError):
    """A ``DepsCall`` uses a ``retval_keyword`` reserved for Covalent (``files``)."""

    def __init__(self, keyword: str) -> None:
        super().__init__(keyword)
        self.keyword = keyword

    def __str__(self) -> str:
        return (f"the retval_keyword {self.keyword!r} is reserved for file transfers; rename it "
                "(or pass override_reserved_retval_keys=True)")


class FileTransferError(CovalentError, OSError):
    """A file transfer of an electron failed on its worker; the node fails with this error."""

    def __init__(self, from_uri: str, to_uri: str, reason: str) -> None:
        super().__init__(from_uri, to_uri, reason)
        self.from_uri = from_uri
        self.to_uri = to_uri
        self.reason = reason

    def __reduce__(self) -> tuple[object, ...]:
        # OSError keeps only two of three args in .args; pickle the fields themselves.
        return (type(self), (self.from_uri, self.to_uri, self.reason))

    def __str__(self) -> str:
        return f"file transfer from {self.from_uri} to {self.to_uri} failed: {self.reason}"


class TaskRuntimeError(CovalentError, RuntimeError):
    """Raised by an executor's ``run`` when the task it ran failed (Covalent's name); it fails
    the node like any exception."""


class TaskCancelledError(CovalentError, RuntimeError):
    """Raised by an executor's ``run`` when the task it ran was cancelled (Covalent's name)."""


class OutputLoadError(CovalentError, RuntimeError):
    """A dispatch's result cannot be unpickled here (``node_id`` -1: the lattice's result)."""

    def __init__(self, dispatch_id: str, node_id: int, reason: str) -> None:
        super().__init__(dispatch_id, node_id, reason)
        self.dispatch_id, self.node_id, self.reason = dispatch_id, node_id, reason

    def __str__(self) -> str:
        what = "the result" if self.node_id < 0 else f"the output of node {self.node_id}"
        return (f"{what} of dispatch {self.dispatch_id} cannot be loaded in this Python: "
                f"{self.reason} (install what it needs here, or use the same environment as "
                "the workers)")


class DispatcherError(CovalentError):
    """The dispatcher refused a request; ``error`` is the server's error code."""

    def __init__(self, error: str, message: str, status: int = 0) -> None:
        super().__init__(error, message, status)
        self.error = error
        self.message = message
        self.status = status

    def __str__(self) -> str:
        return f"{self.error}: {self.message}"


class DispatchNotFoundError(DispatcherError, LookupError):
    """No dispatch with that id is stored."""


class MissingLatticeRecordError(DispatchNotFoundError):
    """Covalent's name for an unknown dispatch id; what the SDK raises, so that both
    ``except MissingLatticeRecordError`` and ``except DispatchNotFoundError`` catch it."""


class NodeNotFoundError(DispatcherError, LookupError):
    """The dispatch has no node with that id."""


class TriggerNotFoundError(DispatcherError, LookupError):
    """The dispatcher has no trigger with that id."""


class InvalidRequestError(DispatcherError, ValueError):
    """The server rejected the request body or parameters."""


class DispatchStateError(DispatcherError, RuntimeError):
    """The dispatch is in a state that does not allow the request."""


class UnauthorizedError(DispatcherError, PermissionError):
    """The server requires a token and the request did not carry the right one."""


class ForbiddenError(DispatcherError, PermissionError):
    """The server refused a request it could have received from a web page or another host name."""


class DispatcherBusyError(DispatcherError, RuntimeError):
    """The dispatcher cannot serve this now (its store is locked by another process); retry."""


class IncompatibleClientError(DispatcherError, RuntimeError):
    """This Python or cloudpickle differs from the workers', so they could not load the workflow."""


class StoredDataLostError(DispatcherError, LookupError):
    """A value the dispatcher stored is missing or damaged on its disk (it removed it)."""


class IncompleteAnswerError(DispatcherError, ConnectionError):
    """The dispatcher's answer was cut off (it found what it was sending damaged, or it
    stopped); its log says why."""


class StorageFullError(DispatcherError, OSError):
    """The dispatcher cannot write to its store (disk full or a file size limit)."""


_BY_CODE: dict[str, type[DispatcherError]] = {
    "IncompatibleClient": IncompatibleClientError,
    "StorageFull": StorageFullError,
    "DispatchNotFound": MissingLatticeRecordError,
    "NodeNotFound": NodeNotFoundError,
    "TriggerNotFound": TriggerNotFoundError,
    "InvalidRequest": InvalidRequestError,
    "PayloadTooLarge": InvalidRequestError,
    "DispatchState": DispatchStateError,
    "Unauthorized": UnauthorizedError,
    "Forbidden": ForbiddenError,
    "UnsupportedMediaType": ForbiddenError,
    "Unavailable": DispatcherBusyError,
    "StoredDataLost": StoredDataLostError,
}


def error_from_body(error: str, message: str, status: int) -> DispatcherError:
    """Map a server error body back to the SDK's exception class."""
    return _BY_CODE.get(error, DispatcherError)(error, message, status)
