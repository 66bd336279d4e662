"""``covalent._shared_files.exceptions`` (the path Covalent scripts import errors from)."""

from __future__ import annotations

from ..errors import MissingLatticeRecordError

__all__ = ["MissingLatticeRecordError"]
