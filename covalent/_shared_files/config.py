"""``covalent._shared_files.config`` (the path Covalent scripts import the config API from)."""

from __future__ import annotations

from ..config import get_config, reload_config, set_config

__all__ = ["get_config", "reload_config", "set_config"]
