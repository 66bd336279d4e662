"""Name the executors an electron may ask for; on this engine every task runs on Dask.

``executor="dask"`` (default): a task on any worker of the dispatcher's Dask cluster.
``executor="local"``: the same; kept so Covalent scripts run unchanged (on the embedded
default the cluster is this machine). Executor instances are accepted for the same reason.
"""

from __future__ import annotations

from typing import Any

KNOWN = ("dask", "local")


class BaseExecutor:
    """An executor choice recorded on a node; its attributes are kept as metadata."""

    short_name = "base"

    def __init__(self, **kwargs: Any) -> None:
        self.options = kwargs

    def to_dict(self) -> dict[str, Any]:
        return {"short_name": self.short_name, "attributes": _jsonable(self.options)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.options!r})"


class DaskExecutor(BaseExecutor):
    """Run the electron as a task on the dispatcher's Dask cluster (the default)."""

    short_name = "dask"

    def __init__(self, scheduler_address: str = "", log_stdout: str = "", log_stderr: str = "",
                 conda_env: str = "", cache_dir: str = "", current_env_on_conda_fail: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(scheduler_address=scheduler_address, **kwargs)


class LocalExecutor(BaseExecutor):
    """Covalent's local executor; here it also runs as a task on the Dask cluster."""

    short_name = "local"

    def __init__(self, log_stdout: str = "", log_stderr: str = "", conda_env: str = "",
                 cache_dir: str = "", current_env_on_conda_fail: bool = False,
                 workdir: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)


def executor_name(executor: Any) -> str:
    """Normalise an ``executor=`` argument to a name; raise ValueError for unknown ones.

    >>> executor_name(None), executor_name("local"), executor_name(DaskExecutor())
    ('dask', 'local', 'dask')
    """
    if executor is None:
        return "dask"
    if isinstance(executor, list | tuple):
        if not executor:
            return "dask"
        return executor_name(executor[0])
    if isinstance(executor, BaseExecutor):
        return executor.short_name
    if isinstance(executor, str):
        if executor not in KNOWN:
            raise ValueError(
                f"unknown executor {executor!r}; this dispatcher runs {', '.join(KNOWN)}"
            )
        return executor
    short = getattr(executor, "short_name", None)
    if isinstance(short, str):
        return short if short in KNOWN else "dask"
    raise ValueError(f"executor must be a name or an executor object, got {type(executor).__name__}")


def _jsonable(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v if isinstance(v, str | int | float | bool | None) else repr(v) for k, v in options.items()}
