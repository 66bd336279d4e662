"""Name the executor an electron asks for, and what it asks of the Dask cluster.

Every task runs on the dispatcher's Dask cluster. ``executor="dask"`` (the default) and
``executor="local"`` run it on any worker; ``ct.executor.DaskExecutor(retries=2,
resources={"GPU": 1}, workers=["big-1"], priority=10, time_limit=60)`` adds Dask options to
that task. Any other name (``"gpu"``, or a Covalent plugin's ``"slurm"``) is a *named
executor*: the dispatcher maps it to options in its config file (``[executors.gpu]``).

Decorating never fails on an executor this engine does not know: a Covalent script that names
a plugin (``executor="slurm"``, ``ct.executor.SlurmExecutor(...)``, any object with a
``short_name``) still imports. Its dispatch fails, naming the executor and how to map it, until
the dispatcher's config maps that name; an executor object that is not one of ours never runs
as if it were.
"""

from __future__ import annotations

import functools
from typing import Any

from .wire.executors import TaskOptions

BUILTIN = ("dask", "local")


class BaseExecutor:
    """The attributes Covalent documents for every executor, plus the Dask options.

    Args:
        log_stdout, log_stderr, cache_dir: Covalent's; kept as attributes. Here a node's
            printed output is captured per node and shown in its result.
        time_limit: seconds a task may run (-1 or 0: no limit). Past it the task is
            interrupted; if it does not stop (a C call), its worker is restarted.
        retries: how many times Dask runs a failed task again.
        resources, workers, allow_other_workers, priority: Dask's per-task options (see
            ``covalent.wire.executors.TaskOptions``).

    Raises:
        ValueError: an option out of range (``retries=-1``, ``priority=5000``).
    """

    short_name = "base"
    runs_here = False  # only DaskExecutor and LocalExecutor run without a mapping

    def __init__(self, log_stdout: str = "", log_stderr: str = "", cache_dir: str = "",
                 time_limit: float = -1, retries: int = 0, *,
                 resources: dict[str, float] | None = None, workers: list[str] | None = None,
                 allow_other_workers: bool = False, priority: int = 0, **kwargs: Any) -> None:
        self.log_stdout = log_stdout
        self.log_stderr = log_stderr
        self.cache_dir = cache_dir
        self.time_limit = time_limit
        self.retries = retries
        self.resources = dict(resources or {})
        self.workers = list(workers or [])
        self.allow_other_workers = allow_other_workers
        self.priority = priority
        for key, value in kwargs.items():  # a plugin's own settings: kept, never used here
            setattr(self, key, value)
        self.task_options()  # fail here, where the option was written

    def task_options(self) -> TaskOptions:
        """What this executor asks of the task's Dask scheduling."""
        return TaskOptions.parse({
            "retries": self.retries, "time_limit": self.time_limit, "resources": self.resources,
            "workers": self.workers, "allow_other_workers": self.allow_other_workers,
            "priority": self.priority}, f"{type(self).__name__}")

    def to_dict(self) -> dict[str, Any]:
        return {"short_name": self.short_name, "type": type(self).__name__,
                "attributes": _jsonable(vars(self))}

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if v not in ("", [], {}, None))
        return f"{type(self).__name__}({shown})"


class DaskExecutor(BaseExecutor):
    """Run the electron as a task on the dispatcher's Dask cluster (the default).

    ``scheduler_address`` and the other Covalent arguments are kept as attributes: the task
    runs on the cluster the dispatcher was started with (``covalent start --scheduler-address``
    or ``--cluster``), in the one Dask graph of its dispatch.

    Example:
        >>> DaskExecutor(retries=2, resources={"GPU": 1}).task_options().to_json()
        {'retries': 2, 'resources': {'GPU': 1.0}}
    """

    short_name = "dask"
    runs_here = True

    def __init__(self, scheduler_address: str = "", log_stdout: str = "stdout.log",
                 log_stderr: str = "stderr.log", conda_env: str = "", cache_dir: str = "",
                 current_env_on_conda_fail: bool = False, workdir: str = "",
                 create_unique_workdir: bool | None = None, *, time_limit: float = -1,
                 retries: int = 0, resources: dict[str, float] | None = None,
                 workers: list[str] | None = None, allow_other_workers: bool = False,
                 priority: int = 0, **kwargs: Any) -> None:
        super().__init__(log_stdout, log_stderr, cache_dir, time_limit, retries,
                         resources=resources, workers=workers,
                         allow_other_workers=allow_other_workers, priority=priority, **kwargs)
        self.scheduler_address = scheduler_address
        self.conda_env = conda_env
        self.current_env_on_conda_fail = current_env_on_conda_fail
        self.workdir = workdir
        self.create_unique_workdir = create_unique_workdir


class LocalExecutor(BaseExecutor):
    """Covalent's local executor; here it also runs as a task on the Dask cluster (with the
    embedded cluster, that is this machine). Takes the same Dask options as ``DaskExecutor``."""

    short_name = "local"
    runs_here = True

    def __init__(self, workdir: str = "", create_unique_workdir: bool | None = None,
                 log_stdout: str = "", log_stderr: str = "",
                 cache_dir: str = "", time_limit: float = -1, retries: int = 0, *,
                 conda_env: str = "", current_env_on_conda_fail: bool = False,
                 resources: dict[str, float] | None = None, workers: list[str] | None = None,
                 allow_other_workers: bool = False, priority: int = 0, **kwargs: Any) -> None:
        super().__init__(log_stdout, log_stderr, cache_dir, time_limit, retries,
                         resources=resources, workers=workers,
                         allow_other_workers=allow_other_workers, priority=priority, **kwargs)
        self.workdir = workdir
        self.create_unique_workdir = create_unique_workdir
        self.conda_env = conda_env
        self.current_env_on_conda_fail = current_env_on_conda_fail


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


@functools.cache  # one class per name: isinstance and pickling see the same class
def plugin_class(name: str) -> type[PluginExecutor]:
    """A stand-in class for the Covalent plugin class ``name`` (``"SlurmExecutor"``), whose
    ``short_name`` is Covalent's: the class name without ``Executor``, in lower case.

    >>> plugin_class("AWSBatchExecutor")(vcpu=2).short_name
    'awsbatch'
    """
    short = name.removesuffix("Executor").lower()
    # Found again by name through ``covalent.executor.__getattr__``, so instances pickle.
    return type(name, (PluginExecutor,), {"short_name": short, "__module__": "covalent.executor",
                                          "__qualname__": name, "__doc__": PluginExecutor.__doc__})


def executor_name(executor: Any) -> str:
    """Normalise an ``executor=`` argument to a name; never raises (see the module docstring).

    >>> executor_name(None), executor_name("local"), executor_name(DaskExecutor())
    ('dask', 'local', 'dask')
    >>> executor_name("slurm"), executor_name(plugin_class("SlurmExecutor")())
    ('slurm', 'slurm')
    """
    return executor_spec(executor)[0]


def executor_spec(executor: Any) -> tuple[str, dict[str, Any], str]:
    """(name, Dask options as JSON, plugin class) of an ``executor=`` argument.

    The plugin class is set for an executor object this engine does not run itself: it runs
    only once the dispatcher maps its name.

    >>> executor_spec(DaskExecutor(retries=1))
    ('dask', {'retries': 1}, '')
    >>> class Foreign:
    ...     short_name = "dask"
    >>> executor_spec(Foreign())
    ('dask', {}, 'Foreign')
    """
    if executor is None:
        return "dask", {}, ""
    if isinstance(executor, list | tuple):
        return executor_spec(executor[0]) if executor else ("dask", {}, "")
    if isinstance(executor, str):
        return executor or "dask", {}, ""
    if isinstance(executor, BaseExecutor):
        options = executor.task_options().to_json()
        if executor.runs_here:
            return executor.short_name, options, ""
        return executor.short_name, options, type(executor).__name__
    short = getattr(executor, "short_name", None)
    if callable(short):  # Covalent's executors name themselves with a method
        try:
            short = short()
        except Exception:  # someone else's method: any failure means "no name"
            short = None
    name = short if isinstance(short, str) and short else type(executor).__name__.lower()
    return name, {}, type(executor).__name__


def _jsonable(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v if isinstance(v, str | int | float | bool | None) else
            v if isinstance(v, list | dict) and _plain(v) else repr(v) for k, v in options.items()}


def _plain(v: Any) -> bool:
    if isinstance(v, dict):
        return all(isinstance(k, str) and _plain(x) for k, x in v.items())
    if isinstance(v, list):
        return all(_plain(x) for x in v)
    return isinstance(v, str | int | float | bool | None)
