"""Executors: ``ct.executor.DaskExecutor()``, ``ct.executor.LocalExecutor()``, custom executors
(subclasses of ``BaseExecutor``/``AsyncBaseExecutor``, see ``covalent.executor.base``), and
Covalent's plugin executors.

``ct.executor.SlurmExecutor(...)`` (any name ending in ``Executor``) is the installed plugin's
class when its package is installed and imports here, else a stand-in that keeps its
arguments, so a Covalent script that builds a plugin executor still imports; its electrons run
once the dispatcher maps the plugin's name (``[executors.slurm]``). See ``_plugins``.
"""

from __future__ import annotations

from typing import Any

from ._plugins import PluginExecutor, installed_class, plugin_class
from .base import AsyncBaseExecutor, BaseExecutor
from .executor_plugins.dask import DaskExecutor
from .executor_plugins.local import LocalExecutor

__all__ = ["AsyncBaseExecutor", "BaseExecutor", "DaskExecutor", "LocalExecutor", "PluginExecutor"]


def __getattr__(name: str) -> Any:
    if name.endswith("Executor") and name[:1].isupper() and name != "Executor":
        return installed_class(name) or plugin_class(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
