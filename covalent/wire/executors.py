"""What an executor asks of the Dask cluster for one task: the options both sides validate.

An electron's executor object (``ct.executor.DaskExecutor(retries=2, resources={"GPU": 1})``)
and a named executor of the dispatcher's config file (``[executors.gpu]``) say the same things
with the same keys, checked by ``TaskOptions.parse`` on the client, on the server and when the
server reads its config. On the wire a node carries only the options that differ from the
defaults (``to_json``); the server lays the electron's own options over its named executor's.

>>> o = TaskOptions.parse({"retries": 2, "resources": {"GPU": 1}}, "executor 'gpu'")
>>> o.to_json()
{'retries': 2, 'resources': {'GPU': 1.0}}
>>> TaskOptions.parse({"time_limit": 30}, "x").over(o).to_json()
{'retries': 2, 'time_limit': 30.0, 'resources': {'GPU': 1.0}}
>>> TaskOptions.parse({"retries": -1}, "executor 'gpu'")
Traceback (most recent call last):
...
ValueError: executor 'gpu': retries must be an integer >= 0 and at most 100, got -1
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PRIORITY_LIMIT = 1000  # |priority| at most this, so it composes with the dispatch order
MAX_RETRIES = 100  # a node failing every time still ends (issue #21: 10**9 never did)

# Keys an executor table may hold that mean something here (the rest are Covalent's own).
OPTION_KEYS = ("retries", "time_limit", "resources", "workers", "allow_other_workers",
               "priority", "pip")


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """How one task runs on Dask; the defaults ask for nothing.

    ``retries``: Dask runs a failed task again up to this many times. ``time_limit``: seconds
    (0: none) before the task is interrupted, then its worker restarted. ``resources``: abstract
    resources a worker must advertise (``dask worker --resources GPU=1``). ``workers``: worker
    names, addresses or hosts allowed to run it (``allow_other_workers``: only a preference).
    ``priority``: among ready tasks, higher runs first (-1000..1000). ``pip``: packages
    installed on a worker before the first task that needs them runs there.
    """

    retries: int = 0
    time_limit: float = 0.0
    resources: dict[str, float] = field(default_factory=dict)
    workers: tuple[str, ...] = ()
    allow_other_workers: bool = False
    priority: int = 0
    pip: tuple[str, ...] = ()

    @classmethod
    def parse(cls, data: Mapping[str, Any], where: str) -> TaskOptions:
        """Options from JSON or TOML (unknown keys ignored); ValueError naming ``where``."""
        try:
            return cls(
                retries=_count(data.get("retries", 0), "retries", MAX_RETRIES),
                time_limit=_seconds(data.get("time_limit", 0)),
                resources=_resources(data.get("resources", {})),
                workers=_names(data.get("workers", ()), "workers"),
                allow_other_workers=_flag(data.get("allow_other_workers", False)),
                priority=_priority(data.get("priority", 0)),
                pip=_names(data.get("pip", ()), "pip"),
            )
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None

    def to_json(self) -> dict[str, Any]:
        """The options that differ from the defaults."""
        out: dict[str, Any] = {}
        if self.retries:
            out["retries"] = self.retries
        if self.time_limit:
            out["time_limit"] = self.time_limit
        if self.resources:
            out["resources"] = dict(self.resources)
        if self.workers:
            out["workers"] = list(self.workers)
        if self.allow_other_workers:
            out["allow_other_workers"] = True
        if self.priority:
            out["priority"] = self.priority
        if self.pip:
            out["pip"] = list(self.pip)
        return out

    def over(self, base: TaskOptions) -> TaskOptions:
        """These options where set, ``base``'s elsewhere (an electron's over its executor's)."""
        return TaskOptions.parse({**base.to_json(), **self.to_json()}, "options")

    def describe(self) -> str:
        """One line for people: ``retries 2, time limit 30 s, resources GPU=1``.

        >>> TaskOptions(retries=2, resources={"GPU": 1.0}).describe()
        'retries 2, resources GPU=1'
        """
        parts = []
        if self.retries:
            parts.append(f"retries {self.retries}")
        if self.time_limit:
            parts.append(f"time limit {self.time_limit:g} s")
        if self.resources:
            parts.append("resources " + ",".join(f"{k}={v:g}" for k, v in self.resources.items()))
        if self.workers:
            parts.append(("prefers" if self.allow_other_workers else "workers") + " "
                         + ",".join(self.workers))
        if self.priority:
            parts.append(f"priority {self.priority}")
        if self.pip:
            parts.append("pip " + " ".join(self.pip))
        return ", ".join(parts) or "no options"


def _count(v: Any, name: str, most: int) -> int:
    if type(v) is not int or not 0 <= v <= most:
        raise ValueError(f"{name} must be an integer >= 0 and at most {most}, got {v!r}")
    return v


def _seconds(v: Any) -> float:
    """Covalent's ``time_limit`` (seconds; -1 or 0: none)."""
    if v is None:
        return 0.0
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ValueError(f"time_limit must be a number of seconds, got {v!r}")
    return float(v) if v > 0 else 0.0


def _resources(v: Any) -> dict[str, float]:
    if not isinstance(v, Mapping):
        raise ValueError(f"resources must be a table of names to amounts, e.g. {{GPU = 1}}, got {v!r}")
    out: dict[str, float] = {}
    for k, amount in v.items():
        if not isinstance(k, str) or not k:
            raise ValueError(f"resource names must be non-empty strings, got {k!r}")
        if isinstance(amount, bool) or not isinstance(amount, int | float) or not amount > 0 \
                or not math.isfinite(amount):
            raise ValueError(f"resource {k!r} must be a positive number, got {amount!r}")
        out[k] = float(amount)
    return out


def _names(v: Any, name: str) -> tuple[str, ...]:
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list | tuple) or not all(isinstance(x, str) and x for x in v):
        raise ValueError(f"{name} must be a list of non-empty strings, got {v!r}")
    return tuple(v)


def _flag(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"allow_other_workers must be true or false, got {v!r}")
    return v


def _priority(v: Any) -> int:
    if type(v) is not int or abs(v) > PRIORITY_LIMIT:
        raise ValueError(f"priority must be an integer from -{PRIORITY_LIMIT} to {PRIORITY_LIMIT}, got {v!r}")
    return v
