"""Submit a compiled graph to Dask: the one place that uses Dask's private API.

``LLGExpr(dsk, _determ_token=name)`` names the graph ourselves. Without a name Dask tokenizes
every task (pickling each spec) to name it, which costs more than running a small workflow.
``tests/dispatcher/test_dask_graph.py`` fails loudly if Dask changes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dask._expr import LLGExpr
from dask.task_spec import Task
from distributed import Client, Future


def submit_graph(client: Client, dsk: Mapping[Any, Task], keys: list[Any], name: str,
                 priority: int) -> list[Future[Any]]:
    """Submit ``dsk`` as one graph called ``name``; the futures of ``keys``, in order."""
    expr = LLGExpr(dict(dsk), _determ_token=name)
    futures: list[Future[Any]] = client.get(expr, keys, sync=False, priority=priority)
    return futures
