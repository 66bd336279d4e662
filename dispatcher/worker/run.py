"""Run one node of a dispatch on a Dask worker: the only place where user code runs.

The Dask task of every node is ``run_node(spec, *parent_outcomes)``. It unpickles the function
and the parents' outputs, gathers list/tuple/dict parents in place, runs bash and pip deps,
``call_before`` hooks (injecting ``retval_keyword`` values), the function and ``call_after``
hooks, and captures this thread's stdout/stderr.

Then it reports how the node ended, itself (see ``dispatcher.protocol``): it pickles the output,
writes it to the blob store unless it is small, and attaches its outcome event to the task's
completion (``dispatcher.outcomes``) before returning.
A node is COMPLETED only once its output is stored. A failed attempt is run again while the
executor's ``retries`` last (each reported as RETRYING); a node that fails for good, is
cancelled, or lies downstream of one of those returns a ``NoOutput`` marker instead of raising,
so Dask never releases the branches a failure must not stop (fail-slow, issue #20).
"""

from __future__ import annotations

import functools
import pickle
import traceback
from dataclasses import dataclass
from typing import IO, Any

import cloudpickle
from dask.sizeof import sizeof

from covalent._transport import PLAIN_TYPES
from covalent.wire import Layout, NodeKind, arguments, clean_text, gather

from ..outcomes import report
from ..protocol import (INLINE_OUTPUT_MAX, GatherSpec, NodeDone, NodeOutcome,
                        NodeSpec, NoOutput, now_iso, outcome_completed, outcome_failed, preview)
from .announce import announcer
from .capture import Capture
from .contact import worker_context
from .custom import call_electron
from .interrupts import TaskInterrupted, interrupts
from .limits import TimeLimitExceeded, limit_message, watchdog
from .packages import packages
from .sublattice import ATTEMPT, run_sublattice

ERROR_MESSAGE_LIMIT = 64 << 10
KEEP_PICKLED_MAX = 1 << 20  # larger values are pickled again if another worker needs them
PICKLE_PROTOCOL = 5  # what cloudpickle.dumps uses by default; stored blobs stay the same


def run_node(spec: NodeSpec, *parents: Any) -> NodeOutcome | NodeDone | NoOutput:
    """The Dask task of one node (it raises only when the worker itself fails)."""
    missing = _missing(parents)
    if missing is not None and missing.error is None:
        return NoOutput(spec.node_id)  # downstream of a failed or cancelled node: never runs
    if not interrupts.may_start(spec.dispatch_id, spec.node_id, spec.generation):
        return NoOutput(spec.node_id)  # cancelled, or submitted again since
    start = now_iso()
    token = announcer.started(spec.dispatch_id, spec.node_id, start)
    try:
        if missing is not None:  # an input stored earlier cannot be read: this node fails
            report(outcome_failed(spec, start, now_iso(), "", "", "OutputUnavailable",
                                  str(missing.error), ""), final=True)
            return NoOutput(spec.node_id)
        for attempt in range(1, spec.retries + 2):
            ATTEMPT.n = attempt  # (a sublattice node's attempt runs a child of its own)
            ended = _attempt(spec, parents, now_iso() if attempt > 1 else start)
            if ended.event is not None:
                retrying = ended.event["s"] == "FAILED" and ended.retry and attempt <= spec.retries
                ended.event.update(t0=start, a=attempt, s="RETRYING" if retrying else ended.event["s"])
                report(ended.event, final=not retrying)
                if retrying:
                    continue
            return ended.value
        raise AssertionError("unreachable: the last attempt returns")
    finally:
        announcer.finished(token)


def load_output(node_id: int, inline: bytes | None, ref: str | None) -> NodeOutcome | NoOutput:
    """Task body of a node whose output is already stored (redispatch reuse, or resume after a
    restart): the value, read on the worker, never through the dispatcher."""
    if inline is not None:
        return NodeOutcome(node_id, inline)
    assert ref is not None
    try:
        return NodeOutcome(node_id, worker_context().store.get(ref))
    except Exception as exc:  # its consumers fail, saying why
        return NoOutput(node_id, f"the stored output of node {node_id} could not be read: "
                                 f"{type(exc).__name__}: {_safe_str(exc)}")


def _missing(parents: Any) -> NoOutput | None:
    """A parent without an output (one that blocks before one that failed to load)."""
    found: NoOutput | None = None
    stack = list(parents)
    while stack:
        p = stack.pop()
        if isinstance(p, NoOutput):
            if p.error is None:
                return p
            found = p
        elif isinstance(p, list | tuple):
            stack.extend(p)
    return found


@dataclass(slots=True)
class _Ended:
    """How one attempt ended: the event to report (None: nothing to report) and the value
    the task returns; ``retry``: the executor's retries may run it again."""

    event: dict[str, Any] | None
    value: NodeOutcome | NodeDone | NoOutput
    retry: bool = True


def _attempt(spec: NodeSpec, parents: tuple[Any, ...], start: str) -> _Ended:
    guard = watchdog.arm(spec, start)
    failure: tuple[str, str, str] | None = None  # raised outside the handlers: no context chain
    with Capture((spec.dispatch_id, spec.node_id)) as cap:  # readable while it runs (#24)
        try:
            interrupts.enter(spec.dispatch_id, spec.node_id)
            try:
                value = _compute(spec, parents)
            finally:
                _leave()
            # A parameter's output is the client's own pickle: no second pickling.
            data = (spec.value if spec.kind == NodeKind.PARAMETER and spec.value
                    else None if sizeof(value) > KEEP_PICKLED_MAX else _dump_output(spec, value))
            event = _stored(spec, data, value, start, cap, preview(value))
        except _OutputError as exc:
            failure = (exc.error_type, str(exc), f"{exc.error_type}: {exc}\n")
        except TaskInterrupted:
            watchdog.disarm(guard)
            return _Ended(None, NoOutput(spec.node_id))  # cancelled: recorded already
        except TimeLimitExceeded:
            failure = ("TimeLimitExceeded", limit_message(spec), "")
        except BaseException as exc:  # user code may raise anything: SystemExit, KeyboardInterrupt
            failure = (type(exc).__name__, _safe_str(exc), _user_traceback(exc))
            del exc  # drop the traceback (a RecursionError's holds 1000 frames)
    if not watchdog.disarm(guard):  # past its time limit, the watchdog reported it already
        return _Ended(None, NoOutput(spec.node_id))
    if failure is not None:
        error_type, message, detail = failure
        message, detail = clean_text(message, ERROR_MESSAGE_LIMIT), clean_text(detail)
        return _Ended(outcome_failed(spec, start, now_iso(), cap.out.getvalue(),
                                     _then(cap.err.getvalue(), detail), error_type, message,
                                     detail), NoOutput(spec.node_id),
                      retry=error_type != "UnpicklableOutputError")
    if spec.sink:
        return _Ended(event, NodeDone(spec.node_id))
    kept = data if data is not None and len(data) <= KEEP_PICKLED_MAX else None
    return _Ended(event, NodeOutcome(spec.node_id, kept, value, True))


def _leave() -> None:
    """Leave user code for good. An interrupt (a cancel, a time limit) aimed at this thread
    while it ran user code can land in ``leave`` itself, before it took the lock: leaving
    again is safe, and a thread must never stay marked (a later cancel of that node would be
    raised into whatever the thread runs next)."""
    while True:
        try:
            interrupts.leave()
            return
        except (TaskInterrupted, TimeLimitExceeded):
            continue


def _stored(spec: NodeSpec, data: bytes | None, value: Any, start: str, cap: Capture,
            shown: str) -> dict[str, Any]:
    """Put the output where it belongs (inline in the event, or in the blob store); its event.
    ``data`` None: a large value, pickled straight into the store as it is hashed."""
    out, err = cap.out.getvalue(), cap.err.getvalue()
    if data is not None and len(data) <= INLINE_OUTPUT_MAX:
        return outcome_completed(spec, start, now_iso(), out, err, shown, inline=data)
    store = worker_context().store
    try:
        if data is not None:
            ref, size = store.put(data)
        else:
            ref, size = store.put_stream(lambda fh: _dump_output(spec, value, fh))
            if size <= INLINE_OUTPUT_MAX:  # smaller than it looked: inline, as any small one
                return outcome_completed(spec, start, now_iso(), out, err, shown,
                                         inline=store.get(ref))
    except OSError as exc:
        shown_size = f"{len(data)} bytes" if data is not None else f"about {sizeof(value)} bytes"
        raise _OutputError("OutputStoreError", f"could not store the output of {spec.name!r} "
                           f"({shown_size}) at {store.root}: {type(exc).__name__}: {exc}") from exc
    return outcome_completed(spec, start, now_iso(), out, err, shown, ref=ref, size=size)


class _OutputError(Exception):
    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


def _dump_output(spec: NodeSpec, value: Any, into: IO[bytes] | None = None) -> bytes:
    """The pickled value (``into``: written to that file instead, large buffers as they are)."""
    try:
        if into is None and type(value) in PLAIN_TYPES:  # the same bytes in a tenth of the time
            return pickle.dumps(value, protocol=PICKLE_PROTOCOL)
        if into is not None:
            cloudpickle.dump(value, into, protocol=PICKLE_PROTOCOL)
            return b""
        data: bytes = cloudpickle.dumps(value, protocol=PICKLE_PROTOCOL)
        return data
    except OSError:
        raise  # writing to the store failed, not pickling
    except Exception as exc:  # cloudpickle raises many types for unpicklable objects
        raise _OutputError(
            "UnpicklableOutputError",
            f"the output of {spec.name!r} (a {type(value).__name__}) cannot be pickled, so it "
            f"cannot be stored or passed on: {type(exc).__name__}: {_safe_str(exc)}",
        ) from exc


@functools.lru_cache(maxsize=256)
def _load_cached(data: bytes) -> Any:
    return cloudpickle.loads(data)


def _values(layout: Layout, gathers: tuple[GatherSpec | None, ...], parents: Any) -> list[Any]:
    values: list[Any] = []
    for i, parent in enumerate(parents):
        spec = gathers[i] if gathers else None
        if spec is not None:
            values.append(_gathered(spec, parent))
        elif layout[i][0] == "wait":
            values.append(None)  # ordering only: never unpickled
        else:
            values.append(parent.value)
    return values


def _gathered(spec: GatherSpec, parents: list[Any]) -> Any:
    args, kwargs = arguments(spec.layout, _values(spec.layout, spec.inner, parents))
    extra = _load_cached(spec.extra) if spec.extra is not None else None
    return gather(spec.kind, extra, args, kwargs)


def _compute(spec: NodeSpec, parents: tuple[Any, ...]) -> Any:
    args, kwargs = arguments(spec.layout, _values(spec.layout, spec.gathers, parents))
    kind = spec.kind
    if kind == NodeKind.PARAMETER:
        assert spec.value is not None
        return _load_cached(spec.value)
    if kind == NodeKind.GETITEM:
        return args[0][args[1]]
    if kind == NodeKind.GETATTR:
        return getattr(args[0], args[1])
    assert spec.fn is not None
    packages.ensure(spec.executor, spec.pip)
    if kind == NodeKind.SUBLATTICE:
        return run_sublattice(spec, _load_cached(spec.fn), args, kwargs)
    fn = _load_cached(spec.fn)
    hooks = _load_cached(spec.hooks) if spec.hooks is not None else {}
    return call_electron(spec, fn, args, kwargs, hooks)  # deps, transfers, custom executor (#22)


def _then(printed: str, traceback_text: str) -> str:
    """A failed node's stderr: what it printed, then its traceback, as in Covalent (#12)."""
    if printed and traceback_text and not printed.endswith("\n"):
        printed += "\n"
    return printed + traceback_text


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
