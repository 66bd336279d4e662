"""``LocalExecutor``: Covalent's local executor; here a task on the Dask cluster too."""

from __future__ import annotations

import inspect
from typing import Any

from ..base import BaseExecutor, refuse_unknown


class LocalExecutor(BaseExecutor):
    """Covalent's local executor; here it also runs as a task on the Dask cluster (with the
    embedded cluster, that is this machine). Takes the same Dask options as ``DaskExecutor``."""

    _short = "local"
    runs_here = True

    def __init__(self, workdir: str = "", create_unique_workdir: bool | None = None,
                 log_stdout: str = "", log_stderr: str = "",
                 cache_dir: str = "", time_limit: float = -1, retries: int = 0, *,
                 conda_env: str = "", current_env_on_conda_fail: bool = False,
                 resources: dict[str, float] | None = None, workers: list[str] | None = None,
                 allow_other_workers: bool = False, priority: int = 0, **kwargs: Any) -> None:
        super().__init__(log_stdout, log_stderr, cache_dir, time_limit, retries,
                         resources=resources, workers=workers,
                         allow_other_workers=allow_other_workers, priority=priority)
        refuse_unknown(type(self), kwargs, _OPTIONS)
        self.workdir = workdir
        self.create_unique_workdir = create_unique_workdir
        self.conda_env = conda_env
        self.current_env_on_conda_fail = current_env_on_conda_fail

    def run(self, function: Any, args: list[Any], kwargs: dict[str, Any],
            task_metadata: dict[str, Any]) -> Any:
        """The electron itself (the worker runs it directly; this is for direct callers)."""
        return function(*args, **kwargs)


_OPTIONS = [name for name in inspect.signature(LocalExecutor.__init__).parameters
            if name not in ("self", "kwargs")]
