"""Run one node of a dispatch on a Dask worker.

This is the only place where user code runs: the Dask task of every node is
``run_node(spec, *parent_outcomes)``. It unpickles the function and the parents' outputs,
runs bash deps, pip deps, ``call_before`` hooks (injecting ``retval_keyword`` values), the
function and ``call_after`` hooks, captures this thread's stdout/stderr, and pickles the output.

It returns a ``NodeOutcome`` whose pickled form carries only bytes, so the dispatcher can
receive it without unpickling the user's value. A failure raises ``NodeTaskError`` (strings
only) so Dask marks the node's descendants as erred without running them (fail-slow).
"""

from __future__ import annotations

import collections
import ctypes
import functools
import heapq
import io
import itertools
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import cloudpickle
from distributed.diagnostics.plugin import WorkerPlugin

from covalent._assembly import Layout, arguments, combine
from covalent.wire import TEXT_LIMIT, clean_text
from covalent._deps import call_with_hooks
from covalent._graph import NodeKind

START_TOPIC = "covalent-node-start"


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


@dataclass(frozen=True, slots=True)
class Gather:
    """A gathering parent (list, tuple, dict) built in place from its own parents.

    Its task argument is the list of its parents' outcomes, in edge order; ``inner`` says which
    of those are themselves gathered in place.
    """

    kind: str
    extra: bytes | None  # the dict's pickled keys
    layout: Layout
    inner: tuple[Gather | None, ...]


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """What a worker needs to run one node; ``layout`` describes each parent argument.

    ``gathers`` (empty, or one entry per parent) marks the parents built in place.
    """

    dispatch_id: str
    node_id: int
    name: str
    kind: str
    fn: bytes | None
    value: bytes | None
    hooks: bytes | None
    layout: Layout
    server: str = ""  # sublattices: where to submit the child dispatch
    token: str = ""
    gathers: tuple[Gather | None, ...] = ()


class NodeOutcome:
    """A node's output: pickled ``data`` plus the value itself while it stays on one worker."""

    __slots__ = ("node_id", "data", "_value", "_loaded", "stdout", "stderr", "start", "end")

    def __init__(self, node_id: int, data: bytes, value: Any = None, loaded: bool = False,
                 stdout: str = "", stderr: str = "", start: str = "", end: str = "") -> None:
        self.node_id = node_id
        self.data = data
        self._value = value
        self._loaded = loaded
        self.stdout = stdout
        self.stderr = stderr
        self.start = start
        self.end = end

    @property
    def value(self) -> Any:
        if not self._loaded:
            self._value = cloudpickle.loads(self.data)
            self._loaded = True
        return self._value

    def __reduce__(self) -> tuple[Any, ...]:
        # Only bytes and strings cross the wire: the receiver never unpickles the user value.
        return (NodeOutcome, (self.node_id, self.data, None, False, self.stdout, self.stderr,
                              self.start, self.end))

    def __sizeof__(self) -> int:
        return len(self.data) + len(self.stdout) + len(self.stderr) + 200


class NodeTaskError(Exception):
    """A node failed on its worker; every field is a string so it pickles anywhere."""

    def __init__(self, node_id: int, error_type: str, message: str, detail: str = "",
                 stdout: str = "", stderr: str = "", start: str = "", end: str = "") -> None:
        super().__init__(node_id, error_type, message, detail, stdout, stderr, start, end)
        self.node_id = node_id
        self.error_type = error_type
        self.message = message
        self.detail = detail
        self.stdout = stdout
        self.stderr = stderr
        self.start = start
        self.end = end

    def __str__(self) -> str:
        return f"node {self.node_id} failed: {self.error_type}: {self.message}"


class TaskInterrupted(BaseException):
    """Raised inside a running node whose dispatch (or node) was cancelled."""


class _Interrupts:
    """Which worker threads are inside a node's user code, so a cancel can interrupt them.

    Worker-process state (there is no app object on a worker). A thread is marked while it
    runs user code; the cancel plugin injects ``TaskInterrupted`` only into a marked thread,
    and unmarking clears any injection still pending, so it never lands in Dask's own code.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.threads: set[int] = set()

    def enter(self) -> None:
        with self.lock:
            self.threads.add(threading.get_ident())

    def leave(self) -> None:
        ident = threading.get_ident()
        with self.lock:
            self.threads.discard(ident)
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), None)

    def interrupt(self, ident: int) -> bool:
        with self.lock:
            if ident not in self.threads:
                return False
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(ident), ctypes.py_object(TaskInterrupted))
            return True


interrupts = _Interrupts()


class CancelPlugin(WorkerPlugin):
    """Worker plugin: when a running node's key is cancelled, interrupt its thread.

    Dask cannot stop a running Python thread; this raises ``TaskInterrupted`` in it at its next
    Python bytecode, so pure-Python work stops and the worker's thread is freed. Code blocked
    inside a C call (a sleep, a socket read, a numpy kernel) stops when that call returns.
    """

    name = "covalent-cancel"

    def setup(self, worker: Any) -> None:
        self.worker = worker

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if start == "executing" and finish in ("cancelled", "released", "forgotten"):
            for ident, running in list(self.worker.active_threads.items()):
                if running == key:
                    interrupts.interrupt(ident)


def runtime_versions() -> dict[str, str]:
    """What decides whether this process can load a client's pickles."""
    import platform

    return {"python": platform.python_version(), "cloudpickle": cloudpickle.__version__}


def preset_outcome(node_id: int, data: bytes, start: str, end: str) -> NodeOutcome:
    """Task body for a node whose output is already known (reuse, resume after restart)."""
    return NodeOutcome(node_id, data, start=start, end=end)


class _Router(io.TextIOBase):
    """A sys.stdout/sys.stderr stand-in that sends each thread's writes to its own buffer."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.local = threading.local()

    def write(self, s: str) -> int:
        buf = getattr(self.local, "buf", None)
        if buf is None:
            return int(self.inner.write(s))
        return int(buf.write(s))

    def flush(self) -> None:
        if getattr(self.local, "buf", None) is None:
            self.inner.flush()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return str(getattr(self.inner, "encoding", "utf-8"))

    def isatty(self) -> bool:
        return False


_router_lock = threading.Lock()


def _routers() -> tuple[_Router, _Router]:
    with _router_lock:
        if not isinstance(sys.stdout, _Router):
            sys.stdout = _Router(sys.stdout)
        if not isinstance(sys.stderr, _Router):
            sys.stderr = _Router(sys.stderr)
        return sys.stdout, sys.stderr


class _Bounded(io.TextIOBase):
    """A text buffer that keeps the first and the last ``limit // 2`` characters written, so a
    node printing a gigabyte costs its worker a megabyte (issue #11)."""

    def __init__(self, limit: int = TEXT_LIMIT) -> None:
        self.half = limit // 2
        self.head: list[str] = []
        self.head_len = 0
        self.tail: collections.deque[str] = collections.deque()
        self.tail_len = 0
        self.total = 0

    def write(self, s: str) -> int:
        n = len(s)
        self.total += n
        room = self.half - self.head_len
        if room > 0:
            self.head.append(s[:room])
            self.head_len += min(room, n)
            s = s[room:]
        if s:
            self.tail.append(s)
            self.tail_len += len(s)
            while self.tail_len - len(self.tail[0]) >= self.half:
                self.tail_len -= len(self.tail.popleft())
        return n

    def getvalue(self) -> str:
        head, tail = "".join(self.head), "".join(self.tail)[-self.half:] if self.tail else ""
        left_out = self.total - len(head) - len(tail)
        marker = f"\n[... {left_out} characters left out ...]\n" if left_out else ""
        return clean_text(head + marker + tail, limit=self.total + len(marker))


class _Capture:
    """Capture this thread's prints for the duration of a ``with`` block."""

    def __enter__(self) -> _Capture:
        self.out_router, self.err_router = _routers()
        self.out, self.err = _Bounded(), _Bounded()
        self.out_router.local.buf = self.out
        self.err_router.local.buf = self.err
        return self

    def __exit__(self, *exc: Any) -> None:
        self.out_router.local.buf = None
        self.err_router.local.buf = None


@functools.lru_cache(maxsize=256)
def _load_cached(data: bytes) -> Any:
    return cloudpickle.loads(data)


class _Announcer:
    """Tells the dispatcher a node is RUNNING once it has run for ``delay`` seconds.

    A start event per node would cost the scheduler a message per task, as much as a short
    task itself; nodes that finish sooner go straight to COMPLETED (their start time travels
    with the outcome). One thread per worker process sleeps until the earliest deadline of a
    node still running; finished nodes are skipped without waking it.
    """

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.cv = threading.Condition()
        self.heap: list[tuple[float, int]] = []
        self.running: dict[int, tuple[Any, dict[str, Any]]] = {}
        self.counter = itertools.count()
        self.thread: threading.Thread | None = None

    def started(self, spec: NodeSpec, start: str) -> int | None:
        try:
            from distributed import get_worker

            worker = get_worker()
        except ValueError:
            return None  # not on a worker (a direct call in a test): nobody to tell
        msg = {"d": spec.dispatch_id, "n": spec.node_id, "t": start}
        with self.cv:
            token = next(self.counter)
            self.running[token] = (worker, msg)
            heapq.heappush(self.heap, (time.monotonic() + self.delay, token))
            if self.thread is None:
                self.thread = threading.Thread(target=self._loop, name="covalent-announcer",
                                               daemon=True)
                self.thread.start()
            if self.heap[0][1] == token:
                self.cv.notify()
        return token

    def finished(self, token: int | None) -> None:
        if token is not None:
            with self.cv:
                self.running.pop(token, None)

    def _loop(self) -> None:
        while True:
            with self.cv:
                while self.heap and self.heap[0][1] not in self.running:
                    heapq.heappop(self.heap)
                if not self.heap:
                    self.cv.wait()
                    continue
                deadline, token = self.heap[0]
                left = deadline - time.monotonic()
                if left > 0:
                    self.cv.wait(left)
                    continue
                heapq.heappop(self.heap)
                worker, msg = self.running.pop(token)
            try:
                worker.log_event(START_TOPIC, msg)
            except Exception:  # a closing worker: the outcome still carries the start time
                pass


announcer = _Announcer(0.05)


def run_node(spec: NodeSpec, *parents: NodeOutcome) -> NodeOutcome:
    """The Dask task of one node. Raises NodeTaskError on any failure."""
    start = now_iso()
    if spec.kind == NodeKind.PARAMETER:
        assert spec.value is not None
        return NodeOutcome(spec.node_id, spec.value, start=start, end=start)
    token = announcer.started(spec, start)
    try:
        return _run(spec, parents, start)
    finally:
        announcer.finished(token)


def _run(spec: NodeSpec, parents: tuple[NodeOutcome, ...], start: str) -> NodeOutcome:
    failure: tuple[str, str, str] | None = None  # raised outside the handlers: no context chain
    with _Capture() as cap:
        try:
            interrupts.enter()
            try:
                value = _compute(spec, parents, cap)
            finally:
                interrupts.leave()
            data = _dump_output(spec, value)
        except _OutputError as exc:
            failure = (exc.error_type, str(exc), str(exc))
        except TaskInterrupted:
            failure = ("TaskInterrupted", "cancelled while running", "")
        except BaseException as exc:  # user code may raise anything: SystemExit, KeyboardInterrupt
            failure = (type(exc).__name__, _safe_str(exc), _user_traceback(exc))
            del exc  # drop the traceback (a RecursionError's holds 1000 frames)
    if failure is not None:
        error_type, message, detail = failure
        raise NodeTaskError(spec.node_id, error_type, clean_text(message, 64 << 10),
                            clean_text(detail), cap.out.getvalue(), cap.err.getvalue(), start,
                            now_iso())
    return NodeOutcome(spec.node_id, data, value, True, cap.out.getvalue(), cap.err.getvalue(),
                       start, now_iso())


class _OutputError(Exception):
    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


def _dump_output(spec: NodeSpec, value: Any) -> bytes:
    try:
        data: bytes = cloudpickle.dumps(value)
        return data
    except Exception as exc:  # cloudpickle raises many types for unpicklable objects
        raise _OutputError(
            "UnpicklableOutputError",
            f"the output of {spec.name!r} (a {type(value).__name__}) cannot be pickled, so it "
            f"cannot be stored or passed on: {type(exc).__name__}: {_safe_str(exc)}",
        ) from exc


def _values(layout: Layout, gathers: tuple[Gather | None, ...], parents: Any) -> list[Any]:
    values: list[Any] = []
    for i, parent in enumerate(parents):
        gather = gathers[i] if gathers else None
        if gather is not None:
            values.append(_gathered(gather, parent))
        elif layout[i][0] == "wait":
            values.append(None)  # ordering only: never unpickled
        else:
            values.append(parent.value)
    return values


def _gathered(gather: Gather, parents: list[Any]) -> Any:
    args, kwargs = arguments(gather.layout, _values(gather.layout, gather.inner, parents))
    extra = _load_cached(gather.extra) if gather.extra is not None else None
    return combine(gather.kind, extra, args, kwargs)


def _compute(spec: NodeSpec, parents: tuple[Any, ...], cap: _Capture) -> Any:
    args, kwargs = arguments(spec.layout, _values(spec.layout, spec.gathers, parents))
    kind = spec.kind
    if kind == NodeKind.GETITEM:
        return args[0][args[1]]
    if kind == NodeKind.GETATTR:
        return getattr(args[0], args[1])
    if kind == NodeKind.SUBLATTICE:
        from .sublattice import run_sublattice

        assert spec.fn is not None
        return run_sublattice(spec, _load_cached(spec.fn), args, kwargs)
    assert spec.fn is not None
    fn = _load_cached(spec.fn)
    hooks = _load_cached(spec.hooks) if spec.hooks is not None else {}
    return call_with_hooks(fn, args, kwargs, hooks)  # deps, file transfers, injected values


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a user exception whose __str__ raises
        return repr(type(exc))


def _user_traceback(exc: BaseException) -> str:
    """The traceback without this module's frames."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))
