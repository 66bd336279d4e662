"""``covalent._workflow.depspip.DepsPip`` (documented path)."""

from __future__ import annotations

from .._deps import DepsPip

__all__ = ["DepsPip"]
