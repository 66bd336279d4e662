"""Covalent's ``covalent.executor.utils``: the task context (``get_context``)."""

from __future__ import annotations

from .context import Context, get_context, set_context

__all__ = ["Context", "get_context", "set_context"]
