"""``covalent._workflow.depsmodule.DepsModule`` (documented path)."""

from __future__ import annotations

from .._deps import DepsModule

__all__ = ["DepsModule"]
