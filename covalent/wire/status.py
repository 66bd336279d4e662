"""Define the dispatch and node status values shared by the SDK, the wire and the store.

A status is a ``StrEnum``: ``Status.COMPLETED == "COMPLETED"`` holds, so scripts that compare
against Covalent's strings keep working.
"""

from __future__ import annotations

import enum


class Status(enum.StrEnum):
    """Status of a dispatch or of one node."""

    NEW_OBJECT = "NEW_OBJECT"
    STARTING = "STARTING"
    DISPATCHING = "DISPATCHING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    POSTPROCESSING = "POSTPROCESSING"
    PENDING_POSTPROCESSING = "PENDING_POSTPROCESSING"
    POSTPROCESSING_FAILED = "POSTPROCESSING_FAILED"
    PENDING_REUSE = "PENDING_REUSE"

    @property
    def STATUS(self) -> str:  # noqa: N802  (Covalent's attribute: Status(STATUS='COMPLETED'))
        """The status as text, as Covalent's ``Status.STATUS`` gives it.

        >>> Status.COMPLETED.STATUS
        'COMPLETED'
        """
        return self.value

    def __bool__(self) -> bool:
        """False for NEW_OBJECT only, as Covalent's ``Status`` (``if result.status:``).

        >>> bool(Status.NEW_OBJECT), bool(Status.FAILED)
        (False, True)
        """
        return self is not Status.NEW_OBJECT

    @property
    def is_terminal(self) -> bool:
        """True for COMPLETED, FAILED, CANCELLED and POSTPROCESSING_FAILED."""
        return self in TERMINAL


TERMINAL = frozenset(
    {Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.POSTPROCESSING_FAILED}
)


class _StatusNamespace:
    """``ct.status.COMPLETED`` and friends, as in Covalent."""

    def __getattr__(self, name: str) -> Status:
        try:
            return Status[name]
        except KeyError:
            raise AttributeError(name) from None

    def __dir__(self) -> list[str]:
        return [s.name for s in Status]


status = _StatusNamespace()
