"""``covalent._shared_files.util_classes.Status`` (documented path)."""

from __future__ import annotations

from ..wire.status import Status

__all__ = ["Status"]
