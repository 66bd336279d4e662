"""Map the executor names electrons ask for to Dask options: the server's named executors.

The server reads them once, at start, from the ``[executors.<name>]`` tables of its config file
(``covalent.config.config_path()``): edit the file, then ``covalent restart``. A table maps its
name when it sets at least one key of ``covalent.wire.executors.OPTION_KEYS``; the other keys
(Covalent's own, such as a plugin's ``username``) are ignored and listed in ``covalent status``.
``dask`` and ``local`` are always mapped (to no options unless a table says otherwise).

At submit, ``ExecutorTable.resolve`` gives every electron its options: the electron's own
(``ct.executor.DaskExecutor(retries=2)``) over its named executor's. An electron whose executor
is not mapped, or whose executor object is a Covalent plugin's or someone else's (``plugin`` on
the wire) and not mapped by name, fails the dispatch before anything runs (``UnknownExecutor``).
A custom executor (``custom`` on the wire: its object runs the task on the worker) needs no
mapping; a table of its name adds options under its own.

>>> table = ExecutorTable.from_config({"gpu": {"resources": {"GPU": 1}},
...                                   "slurm": {"username": "me"}})
>>> table.names()
['dask', 'gpu', 'local']
>>> table.unmapped
{'slurm': ('username',)}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from covalent.wire import NodeKind, WorkflowGraph
from covalent.wire.executors import OPTION_KEYS, TaskOptions

from .errors import InvalidRequest, UnknownExecutor

BUILTIN = ("dask", "local")
RUNS = (NodeKind.ELECTRON, NodeKind.SUBLATTICE)  # the nodes an executor applies to


@dataclass(frozen=True, slots=True)
class NamedExecutor:
    """One name the server runs: its options, and the keys of its table it ignored."""

    name: str
    options: TaskOptions
    configured: bool  # from a config table (a built-in name need not be)
    ignored: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "options": self.options.to_json(),
                "description": effective(self.options), "configured": self.configured,
                "ignored": list(self.ignored)}


class ExecutorTable:
    """The named executors of one server (immutable once built)."""

    def __init__(self, named: dict[str, NamedExecutor] | None = None,
                 unmapped: dict[str, tuple[str, ...]] | None = None, source: str = "") -> None:
        self.named = {name: NamedExecutor(name, TaskOptions(), False) for name in BUILTIN}
        self.named.update(named or {})
        self.unmapped = dict(unmapped or {})  # tables with no key that means anything here
        self.source = source  # the config file, for messages

    @classmethod
    def from_config(cls, tables: Mapping[str, Any], source: str = "") -> ExecutorTable:
        """The ``[executors.*]`` tables of a parsed config file; ValueError names a bad value."""
        if not isinstance(tables, Mapping):
            raise ValueError(f"[executors] in {source or 'the config file'} must be a table of tables")
        named: dict[str, NamedExecutor] = {}
        unmapped: dict[str, tuple[str, ...]] = {}
        for name, table in tables.items():
            if not isinstance(table, Mapping):
                raise ValueError(f"executors.{name} in {source or 'the config file'} must be a "
                                 f"table ([executors.{name}]), got {table!r}")
            ignored = tuple(sorted(k for k in table if k not in OPTION_KEYS))
            if len(ignored) == len(table) and name not in BUILTIN:
                unmapped[name] = ignored
                continue
            options = TaskOptions.parse(table, f"[executors.{name}] in {source or 'the config file'}")
            named[name] = NamedExecutor(name, options, True, ignored)
        return cls(named, unmapped, source)

    def names(self) -> list[str]:
        return sorted(self.named)

    def to_json(self) -> list[dict[str, Any]]:
        return [self.named[n].to_json() for n in self.names()]

    def resolve(self, graph: WorkflowGraph) -> dict[int, TaskOptions]:
        """The options of every electron and sublattice node that asks for any.

        Raises:
            UnknownExecutor: naming each unmapped executor, its electrons, and how to map it.
        """
        out: dict[int, TaskOptions] = {}
        missing: dict[tuple[str, str], list[tuple[int, str]]] = {}
        for node in graph.nodes:
            if node.kind not in RUNS:
                continue
            named = self.named.get(node.executor)
            if node.custom and named is None:  # runs itself; a table of its name only adds
                named = self.named["dask"]
            if named is None or (node.plugin and not named.configured):
                missing.setdefault((node.executor, node.plugin), []).append((node.id, node.name))
                continue
            own = TaskOptions.parse(node.options, f"node {node.id}") if node.options else None
            options = own.over(named.options) if own is not None else named.options
            if options != TaskOptions():
                out[node.id] = options
        if missing:
            raise UnknownExecutor(self._explain(missing),
                                  sorted(i for nodes in missing.values() for i, _ in nodes))
        return out

    def _explain(self, missing: dict[tuple[str, str], list[tuple[int, str]]]) -> str:
        """What is not mapped, what is, and the two ways to run it."""
        uses = []
        for (name, plugin), nodes in missing.items():
            shown = ", ".join(f"{n!r} (node {i})" for i, n in nodes[:5])
            if len(nodes) > 5:
                shown += f" and {len(nodes) - 5} more"
            what = (f"{article(plugin)} {plugin} object (executor {name!r})" if plugin
                    else f"executor {name!r}")
            uses.append(f"{'electrons' if len(nodes) > 1 else 'electron'} {shown} "
                        f"{'use' if len(nodes) > 1 else 'uses'} {what}")
        where = self.source or "the dispatcher's config file"
        first = sorted({name for name, _ in missing})[0]
        lines = ["; ".join(uses) + ". This dispatcher runs every electron as a task on its Dask "
                 "cluster, with the options its config file gives each executor name, and "
                 "does not map this one."]
        lines += [f"[executors.{name}] in {where} sets only keys that mean nothing here "
                  f"({', '.join(self.unmapped[name])})." for name, _ in missing if name in self.unmapped]
        lines.append(f"Configured executors: {', '.join(self.names())}. To run it here, on any "
                     f"worker of this cluster as it is, map the name in {where}, then "
                     f"`covalent restart`:\n    [executors.{first}]\n    retries = 0\n"
                     "Other keys it may set: " + ", ".join(k for k in OPTION_KEYS if k != "retries")
                     + " (e.g. resources = {GPU = 1} for workers started with --resources GPU=1).")
        lines.append("To run such work on a SLURM/PBS machine, Kubernetes or a cloud, start the "
                     "dispatcher on a Dask cluster there: covalent start --cluster "
                     "dask_jobqueue.SLURMCluster --cluster-kwargs '{\"cores\": 4, \"memory\": "
                     "\"8GB\"}' --adapt 0:20 (see the README's Executors section).")
        return "\n".join(lines)


def article(word: str) -> str:
    """"a" or "an" before a class name, as it is read aloud (an acronym letter by letter).

    >>> [article(w) for w in ("SlurmExecutor", "AzureBatchExecutor", "SSHExecutor", "GCPBatchExecutor")]
    ['a', 'an', 'an', 'a']
    """
    if len(word) > 1 and word[:2].isupper():
        return "an" if word[0] in "AEFHILMNORSX" else "a"
    return "an" if word[:1].lower() in "aeiou" else "a"


def effective(options: TaskOptions) -> str:
    """What a named executor's tasks get, every option said (``covalent status``).

    >>> effective(TaskOptions())
    'any worker, no retries, no time limit, priority 0'
    >>> effective(TaskOptions(retries=2, time_limit=30, resources={"GPU": 1.0}, pip=("torch",)))
    'workers with GPU=1, retries 2, time limit 30 s, priority 0, pip torch'
    """
    if options.workers:
        where = (f"prefers workers {','.join(options.workers)}, else any" if
                 options.allow_other_workers else f"only workers {','.join(options.workers)}")
    else:
        where = "any worker"
    if options.resources:
        wants = ",".join(f"{k}={v:g}" for k, v in options.resources.items())
        where = f"workers with {wants}" if where == "any worker" else f"{where}, with {wants}"
    parts = [where, f"retries {options.retries}" if options.retries else "no retries",
             f"time limit {options.time_limit:g} s" if options.time_limit else "no time limit",
             f"priority {options.priority}"]
    if options.pip:
        parts.append("pip " + " ".join(options.pip))
    return ", ".join(parts)


def check_options(graph: WorkflowGraph) -> None:
    """Reject a submission whose electrons carry malformed options (InvalidRequest)."""
    for node in graph.nodes:
        if node.options:
            try:
                TaskOptions.parse(node.options, f"node {node.id} ({node.name}) options")
            except ValueError as exc:
                raise InvalidRequest(str(exc)) from None


def serves(options: TaskOptions, worker: Mapping[str, Any]) -> bool:
    """Whether a worker (as ``scheduler.identity()`` lists it) may run tasks with ``options``.

    >>> w = {"id": "gpu-1", "host": "127.0.0.1", "resources": {"GPU": 1}}
    >>> serves(TaskOptions(resources={"GPU": 1.0}), w), serves(TaskOptions(workers=("cpu-1",)), w)
    (True, False)
    """
    have = worker.get("resources") or {}
    if any(have.get(k, 0) < v for k, v in options.resources.items()):
        return False
    if options.workers and not options.allow_other_workers:
        names = {str(worker.get("id", "")), str(worker.get("address", "")),
                 str(worker.get("host", ""))}
        return bool(names & set(options.workers))
    return True
