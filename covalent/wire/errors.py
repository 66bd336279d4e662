"""The error codes of the dispatcher's answers: ``{"error": <code>, "message": <text>}``.

The server's exception classes name their code in a ``code`` attribute; the SDK maps a code
back to its own exception class. A code is a contract: renaming a class never changes it.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.StrEnum):
    """Every ``error`` value an answer may carry."""

    INVALID_REQUEST = "InvalidRequest"            # 400
    UNAUTHORIZED = "Unauthorized"                 # 401
    FORBIDDEN = "Forbidden"                       # 403: foreign Host or Origin
    DISPATCH_NOT_FOUND = "DispatchNotFound"       # 404
    NODE_NOT_FOUND = "NodeNotFound"               # 404
    NOT_FOUND = "NotFound"                        # 404: no such endpoint
    DISPATCH_STATE = "DispatchState"              # 409: not allowed in the dispatch's state
    INCOMPATIBLE_CLIENT = "IncompatibleClient"    # 409: Python/cloudpickle differ from the workers'
    STORED_DATA_LOST = "StoredDataLost"           # 410: a stored blob is missing or damaged
    PAYLOAD_TOO_LARGE = "PayloadTooLarge"         # 413
    UNSUPPORTED_MEDIA_TYPE = "UnsupportedMediaType"  # 415: a content type a web page could send
    INTERNAL = "InternalError"                    # 500: a bug; the server keeps serving
    UNAVAILABLE = "Unavailable"                   # 503: retry (store locked, too many connections)
    STORAGE_FULL = "StorageFull"                  # 507
