"""``covalent._shared_files.util_classes.Status`` and ``RESULT_STATUS`` (documented paths;
``RESULT_STATUS`` is ``ct.status``)."""

from __future__ import annotations

from ..wire.status import Status, status

RESULT_STATUS = status

__all__ = ["RESULT_STATUS", "Status"]
