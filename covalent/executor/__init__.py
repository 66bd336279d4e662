"""Executors: ``ct.executor.DaskExecutor()``, ``ct.executor.LocalExecutor()``, and stand-ins
for Covalent's plugin executors.

``ct.executor.SlurmExecutor(...)`` (any name ending in ``Executor``) gives a stand-in that
keeps its arguments, so a Covalent script that builds a plugin executor still imports; its
electrons run once the dispatcher maps the plugin's name (``[executors.slurm]``).
"""

from __future__ import annotations

from typing import Any

from .._executors import BaseExecutor, DaskExecutor, LocalExecutor, PluginExecutor, plugin_class

__all__ = ["BaseExecutor", "DaskExecutor", "LocalExecutor", "PluginExecutor"]


def __getattr__(name: str) -> Any:
    if name.endswith("Executor") and name[:1].isupper() and name != "Executor":
        return plugin_class(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
