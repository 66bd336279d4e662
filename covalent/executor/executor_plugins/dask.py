"""``DaskExecutor``: run the electron as a task on the dispatcher's Dask cluster (the default)."""

from __future__ import annotations

import inspect
from typing import Any

from ..base import AsyncBaseExecutor, refuse_unknown


class DaskExecutor(AsyncBaseExecutor):
    """Run the electron as a task on the dispatcher's Dask cluster (the default).

    ``scheduler_address`` and the other Covalent arguments are kept as attributes: the task
    runs on the cluster the dispatcher was started with (``covalent start --scheduler-address``
    or ``--cluster``), in the one Dask graph of its dispatch.

    Example:
        >>> DaskExecutor(retries=2, resources={"GPU": 1}).task_options().to_json()
        {'retries': 2, 'resources': {'GPU': 1.0}}
    """

    _short = "dask"
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
                         allow_other_workers=allow_other_workers, priority=priority)
        refuse_unknown(type(self), kwargs, _OPTIONS)
        self.scheduler_address = scheduler_address
        self.conda_env = conda_env
        self.current_env_on_conda_fail = current_env_on_conda_fail
        self.workdir = workdir
        self.create_unique_workdir = create_unique_workdir

    async def run(self, function: Any, args: list[Any], kwargs: dict[str, Any],
                  task_metadata: dict[str, Any]) -> Any:
        """The electron itself (the worker runs it directly; this is for direct callers)."""
        return function(*args, **kwargs)


_OPTIONS = [name for name in inspect.signature(DaskExecutor.__init__).parameters
            if name not in ("self", "kwargs")]
