"""Stop what a cancelled or timed-out node is doing: its thread, and every process it started.

Worker-process state (a worker has no app object): ``interrupts`` knows which thread runs which
node's user code, the processes each of those threads started through ``subprocess`` (its
``deps_bash``/``deps_pip``, ``call_before`` hooks, a lepton's command, the user's own), which
nodes the dispatcher cancelled, and which ended a moment ago.

Cancelling is explicit, never inferred from Dask releasing a key (Dask releases the tasks that
feed a cancelled node too, and those must run to their end): the dispatcher registers the
``CancelledNodes`` plugin with the cancelled nodes of its running dispatches, which every
worker, present or joining later, applies. A cancelled node's processes are killed (their whole
tree), then ``TaskInterrupted`` is raised in its thread at its next Python bytecode; a node that
has not started returns without running (a node's ``time.sleep`` is woken for it). Code
blocked inside a C call runs no bytecode: if it is still there after the grace period
(``--time-limit-grace``) the worker process is restarted
through its nanny, so a cancelled ``sleep(3600)`` does not hold a worker slot for an hour.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import subprocess
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, SupportsIndex

import psutil
from distributed.diagnostics.plugin import WorkerPlugin

log = logging.getLogger("covalent.worker")

DEFAULT_GRACE_S = 10.0
RESTART_TIMEOUT_S = 5.0  # how long the nanny lets the worker close before it kills it
RECENT_S = 30.0  # how long a node that ended still counts as running for ``running``
RECENT_MIN = 10_000  # ended nodes kept before old ones are dropped

NodeKey = tuple[str, int]
# A process a node's thread started: pid, create time (a reused pid is not it), its Popen
Child = tuple[int, float, "weakref.ref[subprocess.Popen[Any]]"]


class TaskInterrupted(BaseException):
    """Raised inside a running node whose dispatch (or node) was cancelled."""


class Interrupts:
    """The nodes this worker process runs, what they started, and which were cancelled.

    A thread is marked while it runs a node's user code; exceptions are injected only into a
    marked thread, and unmarking clears any injection still pending, so one never lands in
    Dask's own code.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.threads: dict[int, NodeKey] = {}  # thread ident -> the node it runs
        self.children: dict[int, list[Child]] = {}  # thread ident -> the processes it started
        # thread ident -> how to end the blocking call it is in (see ``waking``)
        self.wakers: dict[int, list[Callable[[], None]]] = {}
        # threads an exception was raised in, until they leave -> the exception
        self.interrupted: dict[int, type[BaseException]] = {}
        self.home = _START_DIR  # the working directory when the first running node came in
        self.recent: dict[NodeKey, float] = {}  # nodes that ended -> when (monotonic)
        self._trim_at = RECENT_MIN
        self.cancelled: dict[str, frozenset[int] | None] = {}  # dispatch -> nodes (None: all)
        # dispatch -> node -> the first submission allowed to start it (older ones are
        # superseded: Dask released them, and the dispatcher submitted the node again)
        self.fences: dict[str, tuple[float, dict[int, int]]] = {}

    def enter(self, dispatch_id: str, node_id: int) -> None:
        with self.lock:
            here = _cwd()
            if not self.threads:  # the first node in: where the worker is is its own
                self.home = here or _START_DIR
            if not here:  # a node before it chdir-ed into a directory it then deleted
                _go(self.home)
            self.threads[threading.get_ident()] = (dispatch_id, node_id)

    def leave(self) -> None:
        ident = threading.get_ident()
        with self.lock:
            node = self.threads.pop(ident, None)
            started = self.children.pop(ident, [])
            if ident not in self.interrupted:
                started = []
            self.interrupted.pop(ident, None)
            if not self.threads and _cwd() != self.home:  # the last node out: back where
                _go(self.home)  # the worker was (not as each node ends: that moved the nodes
                # still running beside it; the directory is the process's)
            if node is not None:
                now = time.monotonic()
                self.recent[node] = now
                if len(self.recent) > self._trim_at:
                    self.recent = {k: t for k, t in self.recent.items() if now - t < RECENT_S}
                    # amortized: a worker ending 10,000 nodes within RECENT_S would otherwise
                    # rebuild this for every node it ends (#23)
                    self._trim_at = max(RECENT_MIN, 2 * len(self.recent))
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), None)
        _close_pipes(popen for _, _, popen in started)

    def inside(self, ident: int) -> bool:
        """True while thread ``ident`` is in a node's user code."""
        with self.lock:
            return ident in self.threads

    def may_start(self, dispatch_id: str, node_id: int, generation: int) -> bool:
        """False for a cancelled node, or a submission of it a later one superseded."""
        with self.lock:
            if self._is_cancelled((dispatch_id, node_id)):
                return False
            fence = self.fences.get(dispatch_id)
            return fence is None or generation >= fence[1].get(node_id, 0)

    def fence(self, dispatch_id: str, node_ids: Iterable[int], generation: int) -> list[int]:
        """From now on only submissions after ``generation`` may start these nodes; which of
        them run here (or ended a moment ago), checked in the same step."""
        now = time.monotonic()
        with self.lock:
            self.fences = {d: f for d, f in self.fences.items() if now - f[0] < 3600}
            table = self.fences.setdefault(dispatch_id, (now, {}))[1]
            for n in node_ids:
                table[n] = max(table.get(n, 0), generation + 1)
        return self.running(dispatch_id, node_ids)

    def running(self, dispatch_id: str, node_ids: Iterable[int]) -> list[int]:
        """Which of these nodes run here, or ended less than ``RECENT_S`` ago."""
        wanted = set(node_ids)
        now = time.monotonic()
        with self.lock:
            here = {n for d, n in self.threads.values() if d == dispatch_id}
            here |= {n for (d, n), t in self.recent.items() if d == dispatch_id and now - t < RECENT_S}
        return sorted(here & wanted)

    def note_child(self, popen: subprocess.Popen[Any]) -> None:
        """A process the calling thread started: killed with its node on a cancel."""
        ident = threading.get_ident()
        with self.lock:
            if ident not in self.threads:
                return
        try:
            created = psutil.Process(popen.pid).create_time()
        except psutil.Error:
            return  # already gone
        with self.lock:
            self.children.setdefault(ident, []).append((popen.pid, created, weakref.ref(popen)))

    def interrupt(self, ident: int, exc: type[BaseException] = TaskInterrupted) -> bool:
        """Kill the processes thread ``ident``'s node started, then raise ``exc`` in it if it is
        in user code (a cancel, a time limit); False if it is not, or was interrupted already.

        Once per stay in user code: a cancel reaches a worker more than once (the dispatcher's
        ask, then the table every worker is given), and a second exception would land in the
        node's own clean-up (its ``finally``) and cut it short."""
        with self.lock:
            if ident not in self.threads or ident in self.interrupted:
                return False
            started = list(self.children.get(ident, ()))
        kill_trees(started)
        with self.lock:
            if ident not in self.threads or ident in self.interrupted:
                return False
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(exc))
            self.interrupted[ident] = exc
            wakers = list(self.wakers.get(ident, ()))
        for wake in wakers:  # the exception lands as soon as the blocking call returns
            try:
                wake()
            except Exception as err:  # it returns in its own time: the grace applies
                log.warning("could not wake an interrupted node's thread: %s", err)
        return True

    @contextlib.contextmanager
    def waking(self, wake: Callable[[], None]) -> Iterator[None]:
        """While in this block, an interrupt of the calling thread also calls ``wake`` (from
        the interrupting thread) to end the blocking call the thread may be in, where no
        exception lands (a socket read: ``wake`` shuts the socket down)."""
        ident = threading.get_ident()
        with self.lock:
            self.wakers.setdefault(ident, []).append(wake)
        try:
            yield
        finally:
            with self.lock:
                left = [w for w in self.wakers.pop(ident, ()) if w is not wake]
                if left:
                    self.wakers[ident] = left

    def _is_cancelled(self, node: NodeKey) -> bool:
        """Whether the dispatcher cancelled ``node`` (hold ``lock``)."""
        nodes = self.cancelled.get(node[0], frozenset())
        return nodes is None or node[1] in nodes

    @contextlib.contextmanager
    def outside(self) -> Iterator[None]:
        """Run a step of Dask's own (``distributed.secede``) from a node's thread with nothing
        raised in it meanwhile. An exception landing between Dask's steps can leave the
        worker's thread pool a thread short for good: seen with a cancelled sublattice node,
        whose thread died in ``rejoin`` after the pool had counted it back in; that worker
        (one thread) never ran a task again, and its dispatches stayed RUNNING. An interrupt
        still pending as this begins, or a cancel of the node that comes meanwhile, is raised
        once it ends."""
        ident = threading.get_ident()
        with self.lock:
            node = self.threads.pop(ident, None)
            due = self.interrupted.get(ident)
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), None)
        try:
            yield
        finally:
            if node is not None:
                with self.lock:
                    self.threads[ident] = node
                    if due is None and self._is_cancelled(node):  # nothing raised it meanwhile
                        due = self.interrupted[ident] = TaskInterrupted
                if due is not None:
                    raise due()

    def set_cancelled(self, cancelled: Mapping[str, Iterable[int] | None],
                      asked: tuple[str, Iterable[int] | None] = ("", ())
                      ) -> tuple[list[tuple[int, NodeKey]], list[int]]:
        """Take the dispatcher's cancelled nodes; interrupt those running here: (thread, node).
        And, in the same step, which of the nodes ``asked`` (of one dispatch; None: all of
        them) left their user code here a moment ago and run no more: too late to stop, they
        report how they ended."""
        table = {d: None if nodes is None else frozenset(nodes) for d, nodes in cancelled.items()}
        dispatch_id, wanted = asked[0], None if asked[1] is None else set(asked[1])
        now = time.monotonic()
        with self.lock:
            self.cancelled = table
            hit = [(ident, node) for ident, node in self.threads.items() if self._is_cancelled(node)]
            here = {n for d, n in self.threads.values() if d == dispatch_id}
            ended = sorted(n for (d, n), t in self.recent.items()
                           if d == dispatch_id and now - t < RECENT_S and n not in here
                           and (wanted is None or n in wanted))
        return [(ident, node) for ident, node in hit if self.interrupt(ident)], ended

    def still_running(self, ident: int, node: NodeKey) -> bool:
        with self.lock:
            return self.threads.get(ident) == node


def _close_pipes(popens: Iterable[weakref.ref[subprocess.Popen[Any]]]) -> None:
    """Close the pipes of the processes an interrupted node started. The exception raised in
    its thread can land inside ``subprocess`` (``run``'s clean-up, ``Popen.__exit__``) before
    they are closed; left open, each is a file descriptor until the garbage collector finds it
    (and a ResourceWarning then, in whatever runs at that moment)."""
    for ref in popens:
        popen = ref()
        if popen is None:
            continue
        for pipe in (popen.stdin, popen.stdout, popen.stderr):
            try:
                if pipe is not None:
                    pipe.close()
            except Exception:  # a pipe half-closed by the interrupted code
                pass


def kill_trees(started: Iterable[Child]) -> None:
    """SIGKILL each process (if it is still the one that was started) and its descendants."""
    doomed: list[psutil.Process] = []
    for pid, created, _ in started:
        try:
            proc = psutil.Process(pid)
            if proc.create_time() != created:
                continue  # the pid was reused by another process
            doomed += [proc, *proc.children(recursive=True)]
        except psutil.Error:
            continue
    for proc in doomed:
        try:
            proc.kill()
        except psutil.Error:
            pass  # ended meanwhile


_START_DIR = os.getcwd()  # the worker's working directory, before any node ran


def _cwd() -> str:
    """The working directory; "" if it was removed (a node chdir-ed into a directory it then
    deleted: every later node of the worker failed at ``os.getcwd()``)."""
    try:
        return os.getcwd()
    except FileNotFoundError:
        return ""


def _go(where: str) -> None:
    for place in (where, _START_DIR):
        try:
            os.chdir(place)
            return
        except OSError:
            continue


interrupts = Interrupts()

_execute_child = subprocess.Popen._execute_child  # type: ignore[attr-defined]


def _tracked_execute_child(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> None:
    _execute_child(self, *args, **kwargs)
    interrupts.note_child(self)


# Every process started through subprocess (what deps, hooks, leptons and most user code use)
# is noted for the node whose thread started it; outside a node this notes nothing.
subprocess.Popen._execute_child = _tracked_execute_child  # type: ignore[attr-defined]


_sleep = getattr(time.sleep, "__wrapped__", time.sleep)  # (the module loaded again: not twice)


def _waking_sleep(seconds: "float | SupportsIndex") -> None:
    """``time.sleep`` in a node's thread ends as soon as the node is interrupted (a cancel, a
    time limit), as Python code would: Covalent's cancel examples sleep, and a sleep is a C
    call no exception reaches, so the worker was restarted after the grace period instead."""
    ident = threading.get_ident()
    if ident not in interrupts.threads or not isinstance(seconds, int | float) \
            or not 0 < seconds < 1e9:  # not a node's, or an argument time.sleep itself refuses
        _sleep(seconds)
        return
    # An interrupt before the waker is there lands at this function's next bytecode, before
    # the wait; one after it wakes the wait. A node that caught its interrupt and sleeps again
    # sleeps (a node is interrupted once).
    woken = threading.Event()
    with interrupts.waking(woken.set):
        woken.wait(seconds)


_waking_sleep.__wrapped__ = _sleep  # type: ignore[attr-defined]
time.sleep = _waking_sleep


class CancelledNodes(WorkerPlugin):
    """Worker plugin carrying the cancelled nodes of the dispatcher's running dispatches
    (registered again with the whole table at each cancel; a worker that joins later gets it
    too). ``None`` for a dispatch: all its nodes."""

    name = "covalent-cancel"

    def __init__(self, cancelled: Mapping[str, list[int] | None]) -> None:
        self.cancelled = dict(cancelled)

    def setup(self, worker: Any) -> None:
        _watch(worker, interrupts.set_cancelled(self.cancelled)[0])


def cancel_nodes(cancelled: Mapping[str, list[int] | None], dispatch_id: str,
                 asked: list[int] | None, dask_worker: Any = None) -> list[int]:
    """Run by the dispatcher on every worker (``Client.run``) before it decides a cancel: the
    cancelled nodes of its running dispatches, as ``CancelledNodes`` gives them to later
    workers (none of them starts here from now on, those running are interrupted); and which
    of the nodes ``asked`` (None: all) of ``dispatch_id`` ended here already, their outcomes
    on the way."""
    hit, ended = interrupts.set_cancelled(cancelled, (dispatch_id, asked))
    _watch(dask_worker, hit)
    return ended


def _watch(worker: Any, hit: list[tuple[int, NodeKey]]) -> None:
    """Restart the worker if an interrupted node is still there after its grace period."""
    if not hit or worker is None:
        return
    try:  # plugins are set up, and Client.run runs, on the worker's event loop
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    for ident, node in hit:
        loop.call_later(grace_of(worker), _check_stopped, worker, ident, node)


def _check_stopped(worker: Any, ident: int, node: NodeKey) -> None:
    if interrupts.still_running(ident, node):
        log.warning("restarting this worker: a cancelled node is blocked in a call that does "
                    "not return")
        asyncio.ensure_future(restart_worker(worker, "covalent-cancel"))


def fence_nodes(dispatch_id: str, node_ids: list[int], generation: int) -> list[int]:
    """Run by the dispatcher on every worker (``Client.run``) before it submits these nodes
    again: no submission up to ``generation`` may start them any more; which of them run here."""
    return interrupts.fence(dispatch_id, node_ids, generation)


async def restart_worker(worker: Any, reason: str) -> bool:
    """Ask ``worker``'s nanny to restart its process (which frees every thread); False when
    it has no nanny."""
    if not worker.nanny:
        return False
    try:
        async with worker.rpc(worker.nanny) as nanny:
            await nanny.kill(reason=reason, timeout=RESTART_TIMEOUT_S)
    except Exception as exc:  # the nanny closes this very connection as it kills us
        log.info("nanny kill: %s", exc)
    return True


def grace_of(worker: Any) -> float:
    """Seconds a node gets to stop after an interrupt (``--time-limit-grace``)."""
    from .contact import WorkerContext

    plugin = worker.plugins.get(WorkerContext.name)
    return plugin.time_limit_grace if isinstance(plugin, WorkerContext) else DEFAULT_GRACE_S
