"""Run an electron on its worker, through its custom executor when it has one (#22).

A node whose electron names a custom executor (a ``covalent.executor.base.BaseExecutor`` or
``AsyncBaseExecutor`` subclass) has the executor object in its hooks. Inside the node's Dask
task, on the worker, its ``setup``, ``run(function, args, kwargs, task_metadata)`` and
``teardown`` are called (awaited, on a loop of this thread, for an async one): ``function`` runs
the electron with its dependencies, ``run``'s return value is the node's output and its
exception the node's error. The task's Dask options (resources, retries, time limit) apply as
to any task: a time limit interrupts ``run`` itself.

Every electron runs inside ``set_context``, so ``ct.get_context()`` names its dispatch and node.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import os
import sys
from typing import Any

from covalent.api import call_with_hooks
from covalent.executor.utils import set_context
from covalent.executor.utils.wrappers import ElectronCall

from ..protocol import NodeSpec


def call_electron(spec: NodeSpec, fn: Any, args: list[Any], kwargs: dict[str, Any],
                  hooks: dict[str, Any]) -> Any:
    """The electron's output: ``fn`` with its hooks, through its custom executor if any.
    (The working directory a node leaves behind is undone by ``interrupts``: see there.)"""
    executor = hooks.get("executor")
    with set_context(spec.dispatch_id, spec.node_id):
        if executor is None:
            return call_with_hooks(fn, args, kwargs, hooks)
        metadata = {"dispatch_id": spec.dispatch_id, "node_id": spec.node_id,
                    "results_dir": results_dir()}
        return _through(_own_copy(executor), ElectronCall(fn, hooks), list(args), dict(kwargs),
                        metadata)


def _own_copy(executor: Any) -> Any:
    """One object per task, as Covalent makes one from its data for every task: the unpickled
    one is cached and shared by the tasks of this worker (and of later dispatches), and
    ``run`` may keep state on it (lists, a job handle, ``task_stdout``)."""
    try:
        return copy.deepcopy(executor)
    except Exception:  # noqa: BLE001  (a member that cannot be copied: the shallow copy)
        return copy.copy(executor)


def _through(executor: Any, function: ElectronCall, args: list[Any], kwargs: dict[str, Any],
             metadata: dict[str, Any]) -> Any:
    """setup, run, teardown (also when run raised); what the executor printed to its
    ``task_stdout``/``task_stderr`` goes to the node's stdout/stderr."""
    if inspect.iscoroutinefunction(executor.run):
        return asyncio.run(_through_async(executor, function, args, kwargs, metadata))
    try:
        executor.setup(task_metadata=metadata)
        return executor.run(function, args, kwargs, metadata)
    finally:
        try:
            executor.teardown(task_metadata=metadata)
        finally:
            _forward_streams(executor)


async def _through_async(executor: Any, function: ElectronCall, args: list[Any],
                         kwargs: dict[str, Any], metadata: dict[str, Any]) -> Any:
    try:
        await executor.setup(task_metadata=metadata)
        return await executor.run(function, args, kwargs, metadata)
    finally:
        try:
            await executor.teardown(task_metadata=metadata)
        finally:
            _forward_streams(executor)


def _forward_streams(executor: Any) -> None:
    for attr, stream in (("_task_stdout", sys.stdout), ("_task_stderr", sys.stderr)):
        buffer = getattr(executor, "__dict__", {}).get(attr)
        if buffer is not None and hasattr(buffer, "getvalue"):
            stream.write(buffer.getvalue())


def results_dir() -> str:
    """``task_metadata["results_dir"]``: a directory of this worker's own (made on first use)."""
    from distributed import get_worker

    try:
        base = get_worker().local_directory
    except ValueError:  # not on a worker (a direct call in a test)
        base = os.path.join(os.path.expanduser("~"), ".cache", "covalent")
    path = os.path.join(base, "covalent-results")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path
