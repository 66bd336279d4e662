"""Name the executor an electron asks for, and what it asks of the Dask cluster.

Every task runs on the dispatcher's Dask cluster. ``executor="dask"`` (the default) and
``executor="local"`` run it on any worker; ``ct.executor.DaskExecutor(retries=2,
resources={"GPU": 1}, workers=["big-1"], priority=10, time_limit=60)`` adds Dask options to
that task. Any other name (``"gpu"``, or a Covalent plugin's ``"slurm"``) is a *named
executor*: the dispatcher maps it to options in its config file (``[executors.gpu]``). A custom
executor (a ``BaseExecutor`` subclass with its own ``run``) runs the task itself on the worker;
it needs no mapping (one by its name adds options).

Decorating never fails on an executor this engine does not know: a Covalent script that names
a plugin (``executor="slurm"``, ``ct.executor.SlurmExecutor(...)``, any object with a
``short_name``) still imports. Its dispatch fails, naming the executor and how to map it, until
the dispatcher's config maps that name; an executor object that is not one of ours never runs
as if it were.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .executor import DaskExecutor
from .executor.base import _AbstractBaseExecutor, is_custom

BUILTIN = ("dask", "local")


class ExecutorSpec(NamedTuple):
    """What the graph records of an ``executor=`` argument: its name, its Dask options, the
    class of an executor object this engine runs only once mapped (``plugin``), and the class
    of a custom executor whose ``run`` the worker calls (``custom``)."""

    name: str
    options: dict[str, Any]
    plugin: str = ""
    custom: str = ""


def executor_name(executor: Any) -> str:
    """Normalise an ``executor=`` argument to a name; never raises (see the module docstring).

    >>> executor_name(None), executor_name("local"), executor_name(DaskExecutor())
    ('dask', 'local', 'dask')
    >>> from covalent.executor import SlurmExecutor
    >>> executor_name("slurm"), executor_name(SlurmExecutor())
    ('slurm', 'slurm')
    """
    return executor_spec(executor).name


def executor_spec(executor: Any) -> ExecutorSpec:
    """The ``ExecutorSpec`` of an ``executor=`` argument.

    >>> executor_spec(DaskExecutor(retries=1))
    ExecutorSpec(name='dask', options={'retries': 1}, plugin='', custom='')
    >>> class Foreign:
    ...     short_name = "dask"
    >>> executor_spec(Foreign())
    ExecutorSpec(name='dask', options={}, plugin='Foreign', custom='')
    """
    if executor is None:
        return ExecutorSpec("dask", {})
    if isinstance(executor, list | tuple):
        return executor_spec(executor[0]) if executor else ExecutorSpec("dask", {})
    if isinstance(executor, str):
        return ExecutorSpec(executor or "dask", {})
    if isinstance(executor, _AbstractBaseExecutor):
        options = executor.task_options().to_json()
        name = _usable_name(str(executor.short_name), type(executor))
        if executor.runs_here:
            return ExecutorSpec(name, options)
        if is_custom(executor):
            return ExecutorSpec(name, options, custom=type(executor).__name__)
        return ExecutorSpec(name, options, type(executor).__name__)
    short = getattr(executor, "short_name", None)
    if callable(short):  # Covalent's executors name themselves with a method
        try:
            short = short()
        except Exception:  # someone else's method: any failure means "no name"
            short = None
    name = short if isinstance(short, str) and short else type(executor).__name__.lower()
    return ExecutorSpec(name, {}, type(executor).__name__)


def _usable_name(short: str, cls: type) -> str:
    """``short_name()``, unless it is a module name no one would map (``__main__``)."""
    if short and not short.startswith("_"):
        return short
    return cls.__name__.removesuffix("Executor").lower() or cls.__name__.lower()
