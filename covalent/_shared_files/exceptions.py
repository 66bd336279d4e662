"""``covalent._shared_files.exceptions`` (the path Covalent scripts and plugins import errors
from)."""

from __future__ import annotations

from ..errors import MissingLatticeRecordError, TaskCancelledError, TaskRuntimeError

__all__ = ["MissingLatticeRecordError", "TaskCancelledError", "TaskRuntimeError"]
