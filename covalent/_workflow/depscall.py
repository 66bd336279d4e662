"""``covalent._workflow.depscall.DepsCall`` (documented path)."""

from __future__ import annotations

from .._deps import RESERVED_RETVAL_KEY__FILES, DepsCall

__all__ = ["RESERVED_RETVAL_KEY__FILES", "DepsCall"]
