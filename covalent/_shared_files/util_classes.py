"""``covalent._shared_files.util_classes.Status`` (documented path)."""

from __future__ import annotations

from .._status import Status

__all__ = ["Status"]
