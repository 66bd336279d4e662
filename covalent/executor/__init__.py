"""Executors: ``ct.executor.DaskExecutor()`` and ``ct.executor.LocalExecutor()``."""

from __future__ import annotations

from .._executors import BaseExecutor, DaskExecutor, LocalExecutor

__all__ = ["BaseExecutor", "DaskExecutor", "LocalExecutor"]
