"""Covalent's module paths for shared classes, kept so documented imports (and executor
plugins) work: ``config``, ``exceptions``, ``logger``, ``util_classes``."""

from __future__ import annotations

from ..errors import TaskCancelledError, TaskRuntimeError

__all__ = ["TaskCancelledError", "TaskRuntimeError"]
