"""``covalent._workflow.depsbash.DepsBash`` (documented path)."""

from __future__ import annotations

from .._deps import DepsBash

__all__ = ["DepsBash"]
