"""Covalent's executor base classes: ``BaseExecutor`` and ``AsyncBaseExecutor``.

Every executor keeps Covalent's attributes (``log_stdout``, ``log_stderr``, ``cache_dir``,
``time_limit``, ``retries``) and this engine's Dask options (``resources``, ``workers``,
``allow_other_workers``, ``priority``): whatever the executor, its task is one task of the
dispatch's Dask graph, scheduled with those options.

A *custom executor* is a subclass written by a user or a plugin package, as in Covalent's
"creating a custom executor" how-to. Its object travels with the electron; on the worker, inside
the node's Dask task, ``setup(task_metadata)``, ``run(function, args, kwargs, task_metadata)``
and ``teardown(task_metadata)`` are called (awaited for an ``AsyncBaseExecutor``).
``function(*args, **kwargs)`` runs the electron with its dependencies; what ``run`` returns is
the node's output, what it raises the node's error. ``task_metadata`` holds ``dispatch_id``,
``node_id`` and ``results_dir`` (a directory on the worker).

The helpers plugins call from ``run`` exist: ``task_stdout``/``task_stderr`` (what is printed to
them ends up in the node's stdout/stderr), ``get_cancel_requested``, ``set_job_handle``,
``set_job_status``, ``get_version_info``. Covalent's dispatcher-side protocol (``execute``,
``send``, ``poll``, ``receive``) is not used: Dask runs the task.

>>> class Twice(BaseExecutor):
...     def run(self, function, args, kwargs, task_metadata):
...         return 2 * function(*args, **kwargs)
>>> Twice(retries=1).short_name(), Twice().short_name
('base', 'base')
"""

from __future__ import annotations

import difflib
import io
import platform
from abc import ABCMeta, abstractmethod
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..wire.executors import TaskOptions


class ShortName(str):
    """An executor's name that is also callable: ``ex.short_name`` and Covalent's
    ``ex.short_name()`` both give it."""

    __slots__ = ()

    def __call__(self) -> str:
        return str(self)


class _ShortNameAttr:
    """``short_name``: the ``_short`` of the nearest class that sets one (the built-ins and the
    plugin stand-ins), else, as in Covalent, the last part of the module that defines the class
    (``covalent_ssh_plugin.ssh`` -> ``ssh``)."""

    def __get__(self, obj: object, owner: type) -> ShortName:
        for cls in owner.__mro__:
            if "_short" in cls.__dict__:
                return ShortName(cls.__dict__["_short"])
        return ShortName(owner.__module__.rsplit(".", 1)[-1])


def refuse_unknown(executor: type, kwargs: dict[str, Any], known: list[str]) -> None:
    """Raise for keyword arguments a built-in executor does not take: a mistyped option
    (``time_limt=1``) would otherwise be kept as an attribute and silently do nothing.

    Raises:
        TypeError: as Python's own for an unexpected keyword, naming the closest option.
    """
    if not kwargs:
        return
    name = next(iter(kwargs))
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; it takes {', '.join(sorted(known))}"
    raise TypeError(f"{executor.__name__}() got an unexpected keyword argument {name!r}{hint}")


class _AbstractBaseExecutor:
    """What every executor keeps: Covalent's attributes and the Dask options.

    Args:
        log_stdout, log_stderr, cache_dir: Covalent's; kept as attributes. Each node's printed
            output is captured and stored with it.
        time_limit: seconds a task may run (-1 or 0: no limit). Past it the task is
            interrupted; if it does not stop (a C call), its worker is restarted.
        retries: how many times Dask runs a failed task again.
        resources, workers, allow_other_workers, priority: Dask's per-task options (see
            ``covalent.wire.executors.TaskOptions``).

    Raises:
        ValueError: an option out of range (``retries=-1``, ``priority=5000``).
    """

    short_name = _ShortNameAttr()
    runs_here = False  # True: the task runs the electron itself (DaskExecutor, LocalExecutor)
    SUPPORTS_MANAGED_EXECUTION = False

    def __init__(self, log_stdout: str = "", log_stderr: str = "", cache_dir: str = "",
                 time_limit: float = -1, retries: int = 0, *args: Any,
                 resources: dict[str, float] | None = None, workers: list[str] | None = None,
                 allow_other_workers: bool = False, priority: int = 0, **kwargs: Any) -> None:
        self.log_stdout = log_stdout
        self.log_stderr = log_stderr
        self.cache_dir = cache_dir
        self.time_limit = time_limit
        self.retries = retries
        self.resources = dict(resources or {})
        # One worker's address as a string is one worker, as Dask takes it (not its letters).
        self.workers = [workers] if isinstance(workers, str) else list(workers or [])
        self.allow_other_workers = allow_other_workers
        self.priority = priority
        for key, value in kwargs.items():  # a plugin's own settings: kept as attributes
            setattr(self, key, value)
        self.task_options()  # fail here, where the option was written

    def task_options(self) -> TaskOptions:
        """What this executor asks of the task's Dask scheduling (a subclass that never called
        ``super().__init__`` asks for nothing)."""
        return TaskOptions.parse({
            "retries": getattr(self, "retries", 0), "time_limit": getattr(self, "time_limit", -1),
            "resources": getattr(self, "resources", {}), "workers": getattr(self, "workers", []),
            "allow_other_workers": getattr(self, "allow_other_workers", False),
            "priority": getattr(self, "priority", 0)}, f"{type(self).__name__}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe description: ``short_name``, ``type`` and ``attributes``."""
        return {"short_name": str(self.short_name), "type": type(self).__name__,
                "attributes": _jsonable({k: v for k, v in vars(self).items()
                                         if not k.startswith("_")})}

    def from_dict(self, object_dict: dict[str, Any]) -> _AbstractBaseExecutor:
        """Set the attributes of a ``to_dict()`` on this object; returns it."""
        if object_dict:
            self.__dict__.update(dict(object_dict.get("attributes") or {}))
        return self

    @property
    def task_stdout(self) -> io.StringIO:
        """Printed to during ``run``, it ends up in the node's stdout."""
        return self.__dict__.setdefault("_task_stdout", io.StringIO())  # type: ignore[no-any-return]

    @property
    def task_stderr(self) -> io.StringIO:
        """Printed to during ``run``, it ends up in the node's stderr."""
        return self.__dict__.setdefault("_task_stderr", io.StringIO())  # type: ignore[no-any-return]

    def validate_status(self, status: Any) -> bool:
        return True

    def _version_info(self) -> dict[str, str]:
        from .. import __version__

        return {"python": platform.python_version(), "covalent": __version__}

    def _write_streams(self, stream_strings: Iterable[str], filepaths: Iterable[str],
                       dispatch_id: str, results_dir: str) -> None:
        for text, filepath in zip(stream_strings, filepaths, strict=False):
            if not filepath:
                continue
            path = Path(filepath).expanduser()
            if not path.is_absolute():
                path = Path(results_dir) / dispatch_id / path
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a") as fh:
                fh.write(text)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_task_stdout", None)
        state.pop("_task_stderr", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in vars(self).items()
                          if not k.startswith("_") and v not in ("", [], {}, None))
        return f"{type(self).__name__}({shown})"


class BaseExecutor(_AbstractBaseExecutor, metaclass=ABCMeta):
    """Base of a synchronous executor: subclass it and implement ``run``."""

    def setup(self, task_metadata: dict[str, Any]) -> Any:
        """Called on the worker before ``run``."""

    @abstractmethod
    def run(self, function: Callable[..., Any], args: list[Any], kwargs: dict[str, Any],
            task_metadata: dict[str, Any]) -> Any:
        """Run ``function(*args, **kwargs)`` (the electron) and return its output."""

    def teardown(self, task_metadata: dict[str, Any]) -> Any:
        """Called on the worker after ``run``, also when it raised."""

    def cancel(self, task_metadata: dict[str, Any], job_handle: Any) -> bool:
        """Cancel a job this executor started elsewhere; nothing to cancel by default."""
        return False

    def get_cancel_requested(self) -> bool:
        """Whether the node was cancelled (a cancelled task is interrupted on its worker)."""
        return False

    def get_version_info(self) -> dict[str, str]:
        return self._version_info()

    def set_job_handle(self, handle: Any) -> bool:
        """Keep the handle of a job this executor started elsewhere (``job_handle``)."""
        self._job_handle = handle
        return True

    def set_job_status(self, status: Any) -> bool:
        self._job_status = str(status)
        return True

    def write_streams_to_file(self, stream_strings: Iterable[str], filepaths: Iterable[str],
                              dispatch_id: str, results_dir: str) -> None:
        """Append each text to its file (relative paths under ``results_dir/dispatch_id``)."""
        self._write_streams(stream_strings, filepaths, dispatch_id, results_dir)


class AsyncBaseExecutor(_AbstractBaseExecutor, metaclass=ABCMeta):
    """Base of an asynchronous executor: subclass it and implement ``async def run``."""

    async def setup(self, task_metadata: dict[str, Any]) -> Any:
        """Awaited on the worker before ``run``."""

    @abstractmethod
    async def run(self, function: Callable[..., Any], args: list[Any], kwargs: dict[str, Any],
                  task_metadata: dict[str, Any]) -> Any:
        """Run ``function(*args, **kwargs)`` (the electron) and return its output."""

    async def teardown(self, task_metadata: dict[str, Any]) -> Any:
        """Awaited on the worker after ``run``, also when it raised."""

    async def cancel(self, task_metadata: dict[str, Any], job_handle: Any) -> bool:
        return False

    async def get_cancel_requested(self) -> bool:
        return False

    async def get_version_info(self) -> dict[str, str]:
        return self._version_info()

    async def set_job_handle(self, handle: Any) -> bool:
        self._job_handle = handle
        return True

    async def set_job_status(self, status: Any) -> bool:
        self._job_status = str(status)
        return True

    async def write_streams_to_file(self, stream_strings: Iterable[str], filepaths: Iterable[str],
                                    dispatch_id: str, results_dir: str) -> None:
        self._write_streams(stream_strings, filepaths, dispatch_id, results_dir)


def is_custom(executor: Any) -> bool:
    """Whether ``executor`` is an executor object whose ``run`` the worker calls (a subclass of
    ours that is neither a built-in nor a plugin stand-in).

    >>> class Mine(BaseExecutor):
    ...     def run(self, function, args, kwargs, task_metadata): return function(*args, **kwargs)
    >>> is_custom(Mine()), is_custom("dask")
    (True, False)
    """
    from ._plugins import PluginExecutor

    return (isinstance(executor, _AbstractBaseExecutor) and not executor.runs_here
            and not isinstance(executor, PluginExecutor))


def _jsonable(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v if isinstance(v, str | int | float | bool | None) else
            v if isinstance(v, list | dict) and _plain(v) else repr(v) for k, v in options.items()}


def _plain(v: Any) -> bool:
    if isinstance(v, dict):
        return all(isinstance(k, str) and _plain(x) for k, x in v.items())
    if isinstance(v, list):
        return all(_plain(x) for x in v)
    return isinstance(v, str | int | float | bool | None)


__all__ = ["AsyncBaseExecutor", "BaseExecutor", "ShortName", "is_custom"]
