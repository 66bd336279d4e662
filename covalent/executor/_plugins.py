"""Covalent executor plugins: the installed package when there is one, else a stand-in.

``ct.executor.SSHExecutor`` is, as in Covalent, the class of the installed plugin package that
declares it (entry point group ``covalent.executor.executor_plugins``, module attribute
``EXECUTOR_PLUGIN_NAME`` or ``executor_plugin_name``): a subclass of ``BaseExecutor`` or
``AsyncBaseExecutor`` whose ``run`` the worker calls. Without such a package (or when it fails
to import: most plugins also import Covalent internals), the name gives a *stand-in* that keeps
its arguments, so the script still imports; its electrons run on the Dask cluster once the
dispatcher maps the plugin's short name (``[executors.ssh]`` in its config file).
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import logging
from typing import Any

from .base import BaseExecutor

log = logging.getLogger("covalent.executor")

ENTRY_POINT_GROUP = "covalent.executor.executor_plugins"


class PluginExecutor(BaseExecutor):
    """Stands in for a Covalent executor plugin (``ct.executor.SlurmExecutor(...)``) so a
    script that builds one still imports. Its arguments are kept as attributes; it runs only
    once the dispatcher maps its ``short_name`` (``[executors.slurm]`` in the config file).
    Its ``time_limit`` and ``retries`` apply as on any executor."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        base = {k: kwargs.pop(k) for k in ("log_stdout", "log_stderr", "cache_dir", "time_limit",
                                           "retries") if k in kwargs}
        super().__init__(**base)
        self.args = list(args)
        for key, value in kwargs.items():
            setattr(self, key, value)

    def run(self, function: Any, args: list[Any], kwargs: dict[str, Any],
            task_metadata: dict[str, Any]) -> Any:
        raise NotImplementedError(
            f"{type(self).__name__} stands in for a Covalent plugin that is not installed; its "
            f"electrons run once the dispatcher maps [executors.{self.short_name}]")


@functools.cache  # one class per name: isinstance and pickling see the same class
def plugin_class(name: str) -> type[PluginExecutor]:
    """A stand-in class for the Covalent plugin class ``name`` (``"SlurmExecutor"``), whose
    ``short_name`` is Covalent's: the class name without ``Executor``, in lower case.

    >>> plugin_class("AWSBatchExecutor")(vcpu=2).short_name
    'awsbatch'
    """
    short = name.removesuffix("Executor").lower()
    # Found again by name through ``covalent.executor.__getattr__``, so instances pickle.
    return type(name, (PluginExecutor,), {"_short": short, "__module__": "covalent.executor",
                                          "__qualname__": name, "__doc__": PluginExecutor.__doc__})


@functools.cache
def installed_plugins() -> dict[str, importlib.metadata.EntryPoint]:
    """The executor plugin packages installed here, by the class name each declares."""
    found: dict[str, importlib.metadata.EntryPoint] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = ep
    return found


def installed_class(name: str) -> type[Any] | None:
    """The class ``name`` of an installed plugin package, or None (not installed, or it does
    not import here: the reason is logged once)."""
    for ep in installed_plugins().values():
        try:
            module = _import(ep.value.split(":", 1)[0])
        except Exception as exc:  # a plugin may fail in many ways (missing Covalent internals)
            _warn_once(ep.value, exc)
            continue
        declared = (getattr(module, "EXECUTOR_PLUGIN_NAME", None)
                    or getattr(module, "executor_plugin_name", None))
        cls = getattr(module, name, None)
        if declared == name and isinstance(cls, type):
            return cls
    return None


def _import(module_name: str) -> Any:
    """Import a plugin module, then keep its ``_EXECUTOR_PLUGIN_DEFAULTS`` as the config's
    ``[executors.<module's last part>]`` defaults, which its executor reads when built."""
    from ..config import PLUGIN_DEFAULTS

    module = importlib.import_module(module_name)
    defaults = getattr(module, "_EXECUTOR_PLUGIN_DEFAULTS", None)
    if isinstance(defaults, dict):
        PLUGIN_DEFAULTS.setdefault(module_name.rsplit(".", 1)[-1], dict(defaults))
    return module


@functools.cache
def _warn_once(where: str, exc: BaseException) -> None:
    log.warning("executor plugin %s does not import with covalent-dask (%s: %s); its name "
                "gives a stand-in that runs once the dispatcher maps it", where,
                type(exc).__name__, exc)
