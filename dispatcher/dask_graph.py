"""Submit a compiled graph to Dask, wait for futures, and fail a task a worker cannot stop: the
one place that uses Dask's private API (but for the worker's thread pool: ``worker/pool.py``).

``LLGExpr(dsk, _determ_token=name)`` names the graph ourselves. Without a name Dask tokenizes
every task (pickling each spec) to name it, which costs more than running a small workflow.
``distributed.client._wait`` waits for many futures of a given client without a callback per
future (the public ``distributed.wait`` insists on a default client, which the dispatcher
never sets). On a worker, ``fail_task`` tells the worker's state machine that a task it is
still executing has failed (``ExecuteFailureEvent``), so the scheduler records it erred before
the worker is restarted. ``tests/dispatcher/test_dask_graph.py`` fails loudly if Dask changes any of them.

Per-task options use public API: ``dask.annotate`` with one callable per annotation, which
the scheduler calls with each task's key (every key gets a value, as the scheduler expects).
``live_keys`` and ``dask_error_message`` read the scheduler's task states and Dask's errors.
``prompt_client`` and ``prompt_cluster`` set the send interval of Dask's batched streams
(``BatchedSend.interval``: the client's ``scheduler_comm``, the scheduler's ``stream_comms`` and
``client_comms``, a worker's ``batched_stream``), through scheduler and worker plugins.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from graphlib import TopologicalSorter
from typing import Any

from dask._expr import LLGExpr
from dask.base import annotate
from dask.task_spec import Task
from distributed import Client, Future, SchedulerPlugin, WorkerPlugin
from distributed.client import FuturesCancelledError, _wait
from distributed.scheduler import KilledWorker, NoValidWorkerError

from covalent.wire.executors import TaskOptions

from .protocol import NodeTaskError

# An electron's priority outranks the order of dispatches (whose base priority, minus the
# microseconds since 1970, stays below 2**52 until 2112); |priority| <= 1000 fits in int64.
PRIORITY_STEP = 1 << 52

_SUBMITTING = threading.Lock()
Key = tuple[str, int]

# Dask batches each stream's messages: the dispatcher's client sends to the scheduler at most
# every 10 ms, the scheduler to each worker every 5 ms and to each client every 2 ms, each
# worker to the scheduler every 2 ms. A message that follows another within that time waits
# for the rest of it, so small workflows mostly waited: of a two-node dispatch's 20 ms (run
# one after another), 8 went from the graph's hand-over to its first task starting and 6 from
# that task's end to the next one's start; a 1,000-node fan-out of sub-millisecond tasks ran
# at the pace of the 5 ms refills. On the embedded cluster (and the dispatcher's own client)
# every stream waits at most 1 ms; messages that come while one is being written still go
# out together (benchmarks/README.md has the figures).
STREAM_INTERVAL_S = 0.001


def submit_graph(client: Client, dsk: Mapping[Any, Task], keys: list[Any], name: str,
                 priority: int, options: Mapping[Any, TaskOptions] | None = None
                 ) -> list[Future[Any]]:
    """Submit ``dsk`` as one graph called ``name``; the futures of ``keys``, in order.

    ``priority`` orders dispatches (all their tasks); ``options`` maps task keys to their
    executor's options, which become that task's Dask annotations.
    """
    expr = LLGExpr(dict(dsk), _determ_token=name)
    annotations = task_annotations(dsk, priority, options or {})
    # dask.annotate sets process-wide config: one submission at a time (the runner submits
    # from threads, since Dask pickles the whole graph in this call).
    with _SUBMITTING, annotate(**annotations):
        futures: list[Future[Any]] = client.get(expr, keys, sync=False)
    return futures


# A large graph is handed to Dask in chunks, in dependency order: the scheduler takes about
# 0.1 ms per task to take a graph in (unpickle, order, transitions; 11 s for 100,000 tasks on
# the benchmark machine), and runs none of its tasks before it has taken in the whole of it.
# Chunks of 1,000, 2,000, ... up to 16,000 tasks start the first tasks after the first chunk
# (issue #23: submit to first task running); the tasks a later chunk consumes are held by
# futures until that chunk is with Dask too, or Dask would forget them as soon as they ran.
# COVALENT_SUBMIT_CHUNKS="<chunked above>,<first chunk>" changes the first two (the tests run
# small workflows chunked with it).
CHUNKED_ABOVE = 20_000
FIRST_CHUNK = 1_000
LARGEST_CHUNK = 16_000
CHUNKS_ENV = "COVALENT_SUBMIT_CHUNKS"


def chunking() -> tuple[int, int]:
    """(graphs larger than this many tasks are chunked, tasks in the first chunk).

    >>> import os; os.environ[CHUNKS_ENV] = "4,2"; chunking()
    (4, 2)
    >>> os.environ[CHUNKS_ENV] = "4"; chunking()
    Traceback (most recent call last):
    ...
    ValueError: COVALENT_SUBMIT_CHUNKS is '<chunked above>,<first chunk>' (two positive integers), not '4'
    >>> del os.environ[CHUNKS_ENV]; chunking()
    (20000, 1000)
    """
    text = os.environ.get(CHUNKS_ENV, "")
    if not text:
        return CHUNKED_ABOVE, FIRST_CHUNK
    try:
        above, first = (int(part) for part in text.split(","))
        if above < 1 or first < 1:
            raise ValueError
    except ValueError:
        raise ValueError(f"{CHUNKS_ENV} is '<chunked above>,<first chunk>' (two positive "
                         f"integers), not {text!r}") from None
    return above, first


@dataclass
class Submission:
    """What a submission has handed to Dask so far: the futures of the keys it was asked for,
    by key, and ``held``, the futures of the tasks later chunks consume, to let go of once
    every chunk is with Dask."""

    futures: dict[Any, Future[Any]] = field(default_factory=dict)
    held: list[Future[Any]] = field(default_factory=list)
    handed: Callable[[], object] = lambda: None  # called once the first chunk is with Dask
    chunks: int = 0  # how many chunks are with Dask

    def of(self, keys: list[Any]) -> list[Future[Any]]:
        return [self.futures[k] for k in keys]


def submit_chunked(client: Client, dsk: Mapping[Any, Task], keys: list[Any], name: str,
                   priority: int, options: Mapping[Any, TaskOptions] | None = None, *,
                   into: Submission, stop: Callable[[], bool] = lambda: False) -> None:
    """``submit_graph`` for graphs of any size: a large one in chunks of growing size, in
    dependency order, ``into`` filled as they go (on an error, it holds what was submitted);
    ``stop()`` true between two chunks: submit no more (a cancel came meanwhile)."""
    chunked_above, first = chunking()
    if len(dsk) <= chunked_above:
        got = submit_graph(client, dsk, keys, name, priority, options)
        into.futures.update(zip(keys, got, strict=True))
        into.chunks = 1
        into.handed()
        return
    order = _dependency_order(dsk)
    chunk_of: dict[Any, int] = {}
    chunks: list[list[Any]] = []
    size, start = first, 0
    while start < len(order):
        chunk = order[start:start + size]
        chunk_of.update(dict.fromkeys(chunk, len(chunks)))
        chunks.append(chunk)
        start += size
        size = min(2 * size, LARGEST_CHUNK)
    consumed_later = {d for c, chunk in enumerate(chunks) for k in chunk
                      for d in dsk[k].dependencies if chunk_of[d] < c}
    wanted = set(keys)
    for c, chunk in enumerate(chunks):
        if c and stop():
            return
        asked = [k for k in chunk if k in wanted or k in consumed_later]
        part = {k: dsk[k] for k in chunk}
        got = submit_graph(client, part, asked, f"{name}-{c}", priority, options)
        for k, future in zip(asked, got, strict=True):
            if k in wanted:  # (its future keeps it for the later chunks too)
                into.futures[k] = future
            elif k in consumed_later:
                into.held.append(future)
        into.chunks += 1
        if not c:
            into.handed()


def _dependency_order(dsk: Mapping[Any, Task]) -> list[Any]:
    """The keys of ``dsk`` with every task after the tasks it consumes: the graph's own order
    when it is one already (the compiler's, mostly), else a topological sort."""
    position = {k: i for i, k in enumerate(dsk)}
    if all(position[d] < i for i, task in enumerate(dsk.values()) for d in task.dependencies):
        return list(dsk)
    return list(TopologicalSorter({k: task.dependencies for k, task in dsk.items()}).static_order())


def prompt_client(client: Client) -> None:
    """Have ``client`` send to its scheduler at most ``STREAM_INTERVAL_S`` after a message."""
    _prompt(getattr(client, "scheduler_comm", None))


async def prompt_cluster(client: Client) -> None:
    """Have the scheduler ``client`` talks to, and its workers (those of now and later), send
    at most ``STREAM_INTERVAL_S`` after a message: for the embedded cluster only, which is
    ours to tune (a shared scheduler is not)."""
    await client.register_plugin(PromptScheduler())
    await client.register_plugin(PromptWorker())


def _prompt(stream: Any) -> None:
    if stream is not None and hasattr(stream, "interval"):
        stream.interval = STREAM_INTERVAL_S


class PromptScheduler(SchedulerPlugin):
    """On the scheduler: every stream to a worker or a client, now and later, prompt."""

    name = "covalent-prompt-streams"

    async def start(self, scheduler: Any) -> None:
        for stream in [*scheduler.stream_comms.values(), *scheduler.client_comms.values()]:
            _prompt(stream)

    def add_worker(self, scheduler: Any, worker: str) -> None:
        _prompt(scheduler.stream_comms.get(worker))

    def add_client(self, scheduler: Any, client: str) -> None:
        # Called before the scheduler opens the client's stream (without yielding in between):
        # the stream is there by the time the loop runs this.
        asyncio.get_running_loop().call_soon(lambda: _prompt(scheduler.client_comms.get(client)))


class PromptWorker(WorkerPlugin):
    """On each worker: its stream to the scheduler prompt."""

    name = "covalent-prompt-streams"

    def setup(self, worker: Any) -> None:
        _prompt(getattr(worker, "batched_stream", None))


def task_annotations(dsk: Mapping[Any, Task], priority: int, options: Mapping[Any, TaskOptions]
                ) -> dict[str, Any]:
    """The Dask annotations of a graph: constants, or per-key lookups when options differ.

    >>> a = task_annotations({("f", 0): None, ("g", 1): None}, -5, {("g", 1): TaskOptions(priority=2)})
    >>> a["priority"](("f", 0)) == -5, a["priority"](("g", 1)) > 0
    (True, True)
    """
    if not options:
        return {"priority": priority}
    default = TaskOptions()
    table = {key: options.get(key, default) for key in dsk}
    out: dict[str, Any] = {}

    def per_key(name: str, value: Callable[[TaskOptions], Any], empty: type) -> None:
        values = {key: value(o) for key, o in table.items()}
        if len(set(map(repr, values.values()))) > 1:
            # A dict's bound method pickles by value (the scheduler may be another process);
            # a key not in the graph (there should be none) gets the empty value.
            out[name] = defaultdict(empty, values).__getitem__
        else:
            out[name] = next(iter(values.values()))

    per_key("priority", lambda o: o.priority * PRIORITY_STEP + priority, int)
    # Retries are not Dask's: a node's task runs its attempts itself (worker.run), since a
    # failure Dask saw would release the branches fail-slow must keep running (#20).
    if any(o.resources for o in options.values()):
        per_key("resources", lambda o: dict(o.resources), dict)
    if any(o.workers for o in options.values()):
        per_key("workers", lambda o: list(o.workers), list)
        per_key("allow_other_workers", lambda o: o.allow_other_workers, bool)
    return out


def fail_task(worker: Any, key: Any, exc: BaseException) -> bool:
    """On ``worker``'s event loop: record its task ``key``, still executing in a thread that
    will not return, as failed with ``exc``; the worker tells the scheduler, which marks it
    erred (or retries it). False if the worker is not running that task."""
    from distributed.worker_state_machine import ExecuteFailureEvent

    ts = worker.state.tasks.get(key)
    if ts is None or ts.state not in ("executing", "long-running", "cancelled", "resumed"):
        return False
    worker.handle_stimulus(ExecuteFailureEvent.from_exception(
        exc, key=key, run_id=ts.run_id, start=None, stop=time.time(),
        stimulus_id=f"covalent-time-limit-{time.time()}"))
    return True


async def wait_all(futures: list[Future[Any]], chunk: int = 1000) -> None:
    """Return once every future is finished, erred or cancelled (a lost one is computed again
    by Dask, and waited for). Waits ``chunk`` futures at a time, so that a dispatch of
    100,000 sinks never holds the event loop for long (each wait makes a coroutine per future).
    """
    while True:
        start = 0
        while start < len(futures):
            pending = [f for f in futures[start:start + chunk] if f.status in ("pending", "lost")]
            if not pending:
                start += chunk
                await asyncio.sleep(0)  # a scan of 100,000 futures is long enough to share
                continue
            try:
                await _wait(pending)
            except FuturesCancelledError:
                pass  # cancelled ones are done too
        if not any(f.status in ("pending", "lost") for f in futures):
            return  # nothing was lost while later chunks were waited for


async def cancel(client: Client, futures: list[Future[Any]], chunk: int = 100) -> None:
    """Cancel ``futures`` (force: even if other clients want them), ``chunk`` at a time.

    One ``client.cancel`` of n keys costs the scheduler n * n steps (it releases the whole
    list once per key), which froze it for 11 minutes on a 100,000-node dispatch; slices of
    100 cost n * 100. The loop is let go between slices: ``Client.cancel`` only queues a
    message, awaiting nothing (100,000 futures held the loop for 2.8 s on a loaded machine).
    """
    for start in range(0, len(futures), chunk):
        await client.cancel(futures[start:start + chunk], force=True)
        await asyncio.sleep(0)


def live_keys(keys: list[Key], dask_scheduler: Any = None) -> dict[Key, bool]:
    """On the scheduler: which of ``keys`` it still has waiting or processing (True) or in
    memory (False: the task ended)."""
    to_run = ("waiting", "queued", "no-worker", "processing")
    return {k: ts.state in to_run for k in keys if (ts := dask_scheduler.tasks.get(k)) is not None
            and (ts.state in to_run or ts.state == "memory")}


def live_keys_at(keys: list[Key], dask_scheduler: Any = None) -> tuple[str, dict[Key, bool]]:
    """``live_keys``, and the id of the scheduler that answered (one started again at the same
    address answers a reconnected client before the client knows)."""
    return str(dask_scheduler.id), live_keys(keys, dask_scheduler)


def dask_error_message(exc: BaseException) -> str:
    """What a node failed of, when Dask raised the error rather than the node's own code."""
    if isinstance(exc, NodeTaskError):
        return f"{exc.error_type}: {exc.message}"
    if isinstance(exc, NoValidWorkerError):
        needs = ", ".join(f"{k}={v:g}" for k, v in (exc.resource_restrictions or {}).items())
        pins = ", ".join(sorted(exc.worker_restrictions or ()) + sorted(exc.host_restrictions or ()))
        return (f"NoValidWorker: no worker of the cluster can run this node (it needs "
                f"{'resources ' + needs if needs else ''}{' and ' if needs and pins else ''}"
                f"{'one of the workers ' + pins if pins else ''}) and none came within "
                f"{exc.timeout:g} s; start a worker that has them (dask worker "
                f"--resources {needs.replace(', ', ',') or 'NAME=1'}) or change the executor")
    if isinstance(exc, KilledWorker):
        # Dask counts a death against every task the worker held, running or next in line:
        # a node that never ran can fail so when nodes beside it keep killing their workers.
        allowed = getattr(exc, "allowed_failures", None)
        many = f"{allowed + 1} " if isinstance(allowed, int) else ""
        return (f"KilledWorker: {many}Dask worker processes died while "
                "they held this node, running it or about to (killed, crashed, or over their "
                "memory limit; this node or another one on them), so Dask stopped retrying it "
                "(distributed.scheduler.allowed-failures sets how many). "
                f"KilledWorker: {exc}")
    return f"{type(exc).__name__}: {exc}"
