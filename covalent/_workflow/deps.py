"""``covalent._workflow.deps.Deps``, the base class of dependencies (documented path)."""

from __future__ import annotations

from .._deps import Deps

__all__ = ["Deps"]
