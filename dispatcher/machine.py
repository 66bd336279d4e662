"""The state machine of one running dispatch: events in, instructions out (issue #20).

Pure, in the style of distributed's ``worker_state_machine``: no I/O, no asyncio, no Dask.
The ``Runner`` feeds a ``DispatchMachine`` what happened and carries out what ``handle``
returns; nothing else decides a node's or a dispatch's status.

Events: a node started (``NodeStarted``) or ended (``NodeEnded``: completed, failed, or failed
an attempt its executor retries), every future of a submission ended (``FuturesDone``, with
the errors Dask itself raised: a worker killed too often, no worker with the resources, a node
stuck past its time limit), a submission failed (``SubmitFailed``), a cancel was asked for
(``CancelRequested``), and which released nodes still run on a worker (``RunningElsewhere``).
Instructions: ``Record`` store updates, ``Cancel`` nodes on the cluster, ``FindRunning``,
``Submit`` what is left to run, ``Finish`` with the dispatch's final record (both kinds of
records are in ``machine_io``).

Node phases::

    WAITING --> RUNNING --> COMPLETED | FAILED
    WAITING | RUNNING --> CANCELLED          (cancel: the node and everything downstream)
    WAITING --> BLOCKED                      (downstream of a FAILED or CANCELLED node: never
                                              runs, stays NEW_OBJECT in the store)

Fail-slow: a failure blocks only the failed node's descendants; the dispatch is final once
every node is COMPLETED, FAILED, CANCELLED or BLOCKED: at the outcome that ends the last open
node (Dask's word that the futures ended as well comes a message later), or when the
submission's futures have all ended with nothing left to run. Dask releases what no wanted future
needs, so after an error Dask raised itself some independent nodes may never have run (or
may still run on a worker, released): when the futures of a submission have all ended, the
machine asks which released nodes still run, waits for those, and submits the rest again
(a new *generation*) with the completed nodes' stored outputs, until nothing is left. Nodes it
waits for are asked about again (a second apart, and after each later round), so one that
ended without a word (its worker died; its outcome lost) is found nowhere and runs again.

Gathering nodes (lists, tuples, dicts; ``GATHER``) are COMPLETED once all their parts are;
the ``:postprocess:reconstruct`` node completes with its dispatch, in the same commit
(CANCELLED with a cancelled dispatch, NEW_OBJECT with a failed one). A final dispatch has no
RUNNING node.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator, Mapping

from covalent.wire import GATHER_KINDS, PARAMETER_PREFIX, PREVIEW_LIMIT, NodeKind, WorkflowGraph

from . import state
from .compile import Preset
from .gathering import gather_update
from .machine_io import (Cancel, CancelRequested, Event, FindRunning, Finish, FuturesDone,
                         Instruction, NodeEnded, NodeStarted, Record, RunningElsewhere, Submit,
                         SubmitFailed, Update, ended_event)

__all__ = ["DispatchMachine", "MAX_IDLE_ROUNDS", "OPEN", "Phase", "Cancel", "CancelRequested",
           "Event", "FindRunning", "Finish", "FuturesDone", "Instruction", "NodeEnded",
           "NodeStarted", "Record", "RunningElsewhere", "Submit", "SubmitFailed", "Update",
           "ended_event"]  # the events and instructions: machine_io
MAX_IDLE_ROUNDS = 3  # submissions in a row that changed nothing before the rest is failed


class Phase(enum.IntEnum):
    WAITING = 0
    RUNNING = 1
    COMPLETED = 2
    FAILED = 3
    CANCELLED = 4
    BLOCKED = 5


OPEN = (Phase.WAITING, Phase.RUNNING)


class DispatchMachine:
    """The live state of one dispatch (see the module docstring)."""

    def __init__(self, dispatch_id: str, graph: WorkflowGraph, *,
                 known: Mapping[int, Preset] | None = None,
                 failed: Mapping[int, str] | None = None,
                 cancelled: Iterable[int] = (),
                 cancel_requested: bool = False,
                 clock: Callable[[], str] | None = None) -> None:
        """``known``: outputs known before it runs (reused, large parameters, completed before
        a restart); ``failed`` / ``cancelled``: nodes that ended so before a restart;
        ``clock``: the dispatcher's time, which a dispatch that ends at a node's outcome ends
        at (without one, the outcome's end: a worker's clock)."""
        self.dispatch_id = dispatch_id
        self.graph = graph
        n = len(graph.nodes)
        self.phase = [Phase.WAITING] * n
        self.gather = [str(node.kind) in GATHER_KINDS for node in graph.nodes]
        last = graph.nodes[-1] if n else None
        self.postprocess = last.id if last is not None and last.kind is NodeKind.POSTPROCESS else -1
        self.errors: dict[int, str] = {}
        self.previews: dict[int, str] = {}
        self.known = dict(known or {})
        self._prior_failed = dict(failed or {})
        self._prior_cancelled = set(cancelled)
        self._parents = graph.parents()
        self._children: list[list[int]] | None = None
        self.feeds: dict[int, list[int]] = {}  # node -> the gathering nodes it is a part of
        self.waiting_for: dict[int, int] = {}  # gathering node -> parts not COMPLETED yet
        for g in (i for i in range(n) if self.gather[i]):
            self.waiting_for[g] = len(self._parents[g])
            for e in self._parents[g]:
                self.feeds.setdefault(e.src, []).append(g)
        self.generation = 0
        self.futures_pending = False  # the current submission's futures have not all ended
        self.awaiting: set[int] = set()  # released nodes a worker still runs
        self.asking = 0  # FindRunning instructions not answered yet
        self.cancel_requested = cancel_requested
        self.final: state.DispatchUpdate | None = None
        self.internal_error = ""
        self._events = 0  # node events seen: progress between submissions
        self._to_hear = 0  # open nodes left since they were last counted (see _all_heard)
        self._clock = clock
        self._events_at_submit = -1
        self._idle_rounds = 0

    @classmethod
    def restored(cls, dispatch_id: str, graph: WorkflowGraph,
                 statuses: Mapping[int, str], errors: Mapping[int, str]) -> DispatchMachine:
        """A machine in the state the store holds (a dispatch not resumed yet, to cancel it)."""
        m = cls(dispatch_id, graph)
        phases = {state.Status.COMPLETED: Phase.COMPLETED, state.Status.FAILED: Phase.FAILED,
                  state.Status.CANCELLED: Phase.CANCELLED, state.Status.RUNNING: Phase.RUNNING}
        for i, status in statuses.items():
            m.phase[i] = phases.get(state.Status(status), Phase.WAITING)
            if m.phase[i] is Phase.FAILED:
                m.errors[i] = errors.get(i) or "failed"
        # One walk down from all of them (a walk per node took 30 s on a 20,000-node chain
        # that a partial cancel had recorded CANCELLED, on the loop: the review of #23)
        children = m.children()
        ended = [i for i, p in enumerate(m.phase) if p in (Phase.FAILED, Phase.CANCELLED)]
        for i in m.descendants(c for n in ended for c in children[n]):
            if m.phase[i] is Phase.WAITING:
                m.phase[i] = Phase.BLOCKED
        m.generation = 1
        return m

    # -- queries -----------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.final is not None

    @property
    def failed(self) -> dict[int, str]:
        return {i: e for i, e in self.errors.items() if self.phase[i] is Phase.FAILED}

    def completed(self) -> list[int]:
        return [i for i, p in enumerate(self.phase) if p is Phase.COMPLETED]

    def children(self) -> list[list[int]]:
        if self._children is None:
            self._children = [[] for _ in self.phase]
            for e in self.graph.edges:
                self._children[e.src].append(e.dst)
        return self._children

    def descendants(self, roots: Iterable[int]) -> set[int]:
        """``roots`` and every node downstream of them."""
        children = self.children()
        seen: set[int] = set()
        stack = list(roots)
        while stack:
            i = stack.pop()
            if i not in seen:
                seen.add(i)
                stack.extend(children[i])
        return seen

    def inputs_of(self, nodes: Iterable[int]) -> set[int]:
        """The COMPLETED nodes whose outputs ``nodes`` consume (through gathering nodes)."""
        out: set[int] = set()
        seen: set[int] = set()
        stack = [e.src for n in nodes for e in self._parents[n]]
        while stack:
            i = stack.pop()
            if i in seen:
                continue
            seen.add(i)
            if self.gather[i]:
                stack.extend(e.src for e in self._parents[i])
            elif self.phase[i] is Phase.COMPLETED:
                out.add(i)
        return out

    def check(self) -> None:
        """Assert the invariants (the tests call it after every step)."""
        ended = (Phase.FAILED, Phase.CANCELLED, Phase.BLOCKED)
        assert set(self.errors) == {i for i, p in enumerate(self.phase) if p is Phase.FAILED}
        for i, p in enumerate(self.phase):
            parents = [self.phase[e.src] for e in self._parents[i]]
            if p is Phase.BLOCKED:  # only downstream of a node that did not complete
                assert any(q in ended for q in parents), i
            if p in OPEN:  # nothing open downstream of a node that will never complete
                assert not any(q in ended for q in parents), (i, parents)
            if p is Phase.RUNNING:  # a node starts once its parents completed
                assert all(q is Phase.COMPLETED for q in parents), (i, parents)
            if self.gather[i] and p is Phase.WAITING:
                waiting = sum(q is not Phase.COMPLETED for q in parents)
                assert self.waiting_for[i] == waiting, (i, waiting, self.waiting_for[i])
        if self.final is not None:
            assert Phase.RUNNING not in self.phase, "a final dispatch has a RUNNING node"
            if self.final.status == state.Status.COMPLETED:
                assert all(p is Phase.COMPLETED for p in self.phase)

    # -- starting ------------------------------------------------------------------------------

    def start(self, stamp: str, find_running: bool = False) -> list[Instruction]:
        """What is known before anything runs, and the first submission; ``find_running`` (a
        replica taking the dispatch over): first ask which open nodes still run on the cluster."""
        updates: list[Update] = [state.dispatch_started(self.dispatch_id, stamp)]
        for node_id, k in self.known.items():
            updates.append(state.node_completed(self.dispatch_id, node_id, k.inline, k.start, k.end,
                                                k.stdout, k.stderr, ref=k.ref, size=k.size,
                                                reused_from=k.reused_from,
                                                sub_dispatch_id=k.sub_dispatch_id,
                                                preview=k.preview or None))  # as the SDK shows it
            updates += self._complete(node_id, k.preview, stamp)
        for node in self.graph.nodes:
            if node.kind is NodeKind.PARAMETER and node.id not in self.known:
                assert node.value is not None
                label = node.name.removeprefix(PARAMETER_PREFIX)[:PREVIEW_LIMIT]
                updates.append(state.node_completed(self.dispatch_id, node.id,
                                                    self.graph.blobs[node.value], stamp, stamp,
                                                    preview=label))
                updates += self._complete(node.id, label, stamp)
        for node_id, error in self._prior_failed.items():
            if self.phase[node_id] in OPEN:
                self.phase[node_id], self.errors[node_id] = Phase.FAILED, error
                self._block(node_id)
        for node_id in self._prior_cancelled:
            if self.phase[node_id] in OPEN:
                self.phase[node_id] = Phase.CANCELLED
                self._block(node_id)
        for g, waiting in self.waiting_for.items():  # gathers nothing (a constant result)
            if waiting == 0 and self.phase[g] is Phase.WAITING:
                updates += self._gathered(g, stamp)
        out: list[Instruction] = [Record(updates)]
        return out + self._settle(stamp, asked=not find_running)

    def parent_ids(self, node: int) -> Iterator[int]:
        """The nodes whose outputs ``node`` waits for (one per incoming edge)."""
        return (e.src for e in self._parents.get(node, ()))

    # -- events --------------------------------------------------------------------------------

    def handle(self, event: Event) -> list[Instruction]:
        if self.final is not None:
            return []  # a late report of a finished dispatch changes nothing
        if isinstance(event, NodeEnded):
            return self._ended(event)
        if isinstance(event, NodeStarted):
            if self.phase[event.node] is not Phase.WAITING or self.gather[event.node]:
                return []
            self.phase[event.node] = Phase.RUNNING
            self._events += 1
            return [Record([state.node_running(self.dispatch_id, event.node, event.stamp,
                                               event.worker)])]
        if isinstance(event, FuturesDone):
            return self._futures_done(event)
        if isinstance(event, CancelRequested):
            return self._cancel(event)
        if isinstance(event, RunningElsewhere):
            return self._running_elsewhere(event)
        return self._submit_failed(event)

    def _ended(self, ev: NodeEnded) -> list[Instruction]:
        node, d = ev.node, self.dispatch_id
        if self.phase[node] not in OPEN or self.gather[node]:
            return []  # recorded once (a node run again after its worker died reports again)
        self._events += 1
        if ev.status == "RETRYING":
            # the attempt starting now counted: a node cancelled in it shows every one it had
            return [Record([state.node_retrying(d, node, ev.attempts + 1)])]
        updates: list[Update]
        if ev.status == "COMPLETED":
            updates = [state.node_completed(d, node, ev.data, ev.start, ev.end, ev.stdout,
                                            ev.stderr, ev.preview, ref=ev.ref, size=ev.size,
                                            attempts=ev.attempts,
                                            worker=ev.worker)]
            updates += self._complete(node, ev.preview or "", ev.end)
        else:
            tries = state.tries_said(ev.attempts)
            self.phase[node], self.errors[node] = Phase.FAILED, ev.error + tries
            updates = [state.node_failed(d, node, ev.detail or ev.error + tries, ev.end, ev.start,
                                         ev.stdout, ev.stderr, attempts=ev.attempts,
                                         worker=ev.worker)]
            self._block(node)
        out: list[Instruction] = [Record(updates)]
        self._to_hear -= 1
        awaited = node in self.awaiting
        self.awaiting.discard(node)
        if self.futures_pending:
            out += self._all_heard(ev.end)
        elif awaited:
            out += self._settle(self._now(ev.end))
        return out

    def _all_heard(self, stamp: str) -> list[Instruction]:
        """Finish as soon as no node is open, without waiting for Dask to say that the
        submission's futures have ended too (a message and a commit later, on every dispatch):
        every node has its outcome, so nothing those futures could say changes one.

        ``_to_hear`` counts the open nodes down as they end (an outcome, a block, a cancel), from
        the last time they were counted: they are counted again only when it reaches 0, so
        each outcome costs O(1). A node ending some other way (an error Dask raised) is not
        counted down, which leaves the finish to the futures, as before."""
        if self._to_hear > 0:
            return []
        open_tasks = self._open_tasks()
        if open_tasks:
            self._to_hear = len(open_tasks)
            return []
        return self._finish(self._now(stamp))

    def _now(self, stamp: str) -> str:
        """The dispatcher's time, for a dispatch settled at a worker's outcome (``stamp``,
        that outcome's end, without a clock)."""
        return self._clock() if self._clock is not None else stamp

    def _futures_done(self, ev: FuturesDone) -> list[Instruction]:
        if ev.generation != self.generation:
            return []
        self.futures_pending = False
        updates: list[Update] = []
        for node, message in sorted(ev.erred.items()):
            if 0 <= node < len(self.phase) and self.phase[node] in OPEN:
                self.phase[node], self.errors[node] = Phase.FAILED, message
                updates.append(state.node_failed(self.dispatch_id, node, message, ev.stamp))
                self._block(node)
        if ev.internal:
            self.internal_error = ev.internal
            return [Record(updates), *self._fail_open(ev.internal, ev.stamp)]
        return [Record(updates), *self._settle(ev.stamp)]

    def _submit_failed(self, ev: SubmitFailed) -> list[Instruction]:
        if ev.generation != self.generation:
            return []
        self.futures_pending = False
        updates: list[Update] = []
        for node, message in ev.nodes.items():
            if self.phase[node] in OPEN:
                self.phase[node], self.errors[node] = Phase.FAILED, message
                updates.append(state.node_failed(self.dispatch_id, node, message, ev.stamp))
                self._block(node)
        if self.generation == 1 and not self._events:
            self.final = state.dispatch_not_submitted(self.dispatch_id, ev.reason, ev.stamp)
            return [Record(updates), Finish(self.final)]
        self.internal_error = f"the dispatcher could not submit the rest: {ev.reason}"
        return [Record(updates), *self._fail_open(self.internal_error, ev.stamp)]

    def cancel_targets(self, nodes: Iterable[int] | None) -> set[int]:
        """The unfinished nodes a cancel of ``nodes`` (and what lies below them) would stop;
        of the whole dispatch if ``nodes`` is empty or None."""
        targets = self.descendants(nodes) if nodes else set(range(len(self.phase)))
        return {i for i in targets if self.phase[i] in OPEN}

    def _cancel(self, ev: CancelRequested) -> list[Instruction]:
        targets = self.cancel_targets(ev.nodes)
        if ev.nodes and not targets:
            # The nodes named and everything below them have ended: nothing stops, and the
            # dispatch ends as it would have. Marked cancelled, it would end CANCELLED with
            # no node cancelled and no result (a final status must be its nodes', as
            # Covalent's is).
            return []
        self.cancel_requested = True
        for i in targets:
            self.phase[i] = Phase.CANCELLED
            self.awaiting.discard(i)
            if not self.gather[i]:
                self._to_hear -= 1
        updates: list[Update] = [state.node_cancelled(self.dispatch_id, i, ev.stamp)
                                 for i in sorted(targets)]
        out: list[Instruction] = [Record(updates), Cancel(sorted(targets), whole=not ev.nodes)]
        if not ev.nodes:
            return out + self._finish(ev.stamp)
        return out + (self._all_heard(ev.stamp) if self.futures_pending else self._settle(ev.stamp))

    def _running_elsewhere(self, ev: RunningElsewhere) -> list[Instruction]:
        self.asking = max(0, self.asking - 1)
        if ev.generation != self.generation or self.futures_pending:
            return []  # a stale answer: a later submission settles it
        self.awaiting = {i for i in ev.nodes if self.phase[i] in OPEN}
        return self._settle(ev.stamp, asked=True)

    # -- transitions -----------------------------------------------------------------------------

    def _complete(self, node: int, preview: str, stamp: str) -> list[Update]:
        """Mark ``node`` COMPLETED; the updates of the gathering nodes it completes."""
        self.phase[node] = Phase.COMPLETED
        updates: list[Update] = []
        gathers = self.feeds.get(node)
        if not gathers:
            return updates
        self.previews[node] = preview
        for g in gathers:
            self.waiting_for[g] -= 1
            if self.waiting_for[g] == 0 and self.phase[g] is Phase.WAITING and g != self.postprocess:
                updates += self._gathered(g, stamp)
        return updates

    def _gathered(self, g: int, stamp: str) -> list[Update]:
        """Record a gathering node as the list of its parts (they are stored already)."""
        if g == self.postprocess:
            return []  # completes with the dispatch
        update, shown = gather_update(self.dispatch_id, self.graph, g, self._parents[g],
                                      self.previews, stamp)
        return [update, *self._complete(g, shown, stamp)]

    def _block(self, node: int) -> None:
        """Everything downstream of a failed or cancelled node that has not run never will."""
        for i in self.descendants(self.children()[node]):
            if self.phase[i] is Phase.WAITING:
                self.phase[i] = Phase.BLOCKED
                if not self.gather[i]:
                    self._to_hear -= 1

    def _open_tasks(self) -> list[int]:
        return [i for i, p in enumerate(self.phase) if p in OPEN and not self.gather[i]]

    def _settle(self, stamp: str, asked: bool = False) -> list[Instruction]:
        """With no future pending: finish, wait for released nodes still running, or submit
        what is left (the one place that decides what happens next)."""
        if self.futures_pending or self.final is not None:
            return []
        if self.awaiting and not asked and self.asking:
            return []  # their outcome (or the next FindRunning answer) settles it
        open_tasks = self._open_tasks()
        if not open_tasks:
            return self._finish(stamp)
        if not asked:  # released by Dask, some may still run (a quick one not announced yet);
            # nodes awaited while the rest ran are asked about again: one that ended without a
            # word (its worker died) is found nowhere now, and runs again
            return self._ask(FindRunning(self.generation, open_tasks, 0.0))
        rest = set(open_tasks) - self.descendants(self.awaiting)
        if not rest:
            return self._ask(FindRunning(self.generation, sorted(self.awaiting), 1.0))
        return self._next_round(stamp, rest)

    def _ask(self, ins: FindRunning) -> list[Instruction]:
        self.asking += 1
        return [ins]

    def _next_round(self, stamp: str, nodes: set[int]) -> list[Instruction]:
        if self.generation and self._events == self._events_at_submit:
            self._idle_rounds += 1
            if self._idle_rounds >= MAX_IDLE_ROUNDS:
                return self._fail_open(f"Dask dropped these nodes {self._idle_rounds} times "
                                       "without running them", stamp)
        else:
            self._idle_rounds = 0
        self._events_at_submit = self._events
        self._to_hear = 0  # counted again at the next outcome
        self.generation += 1
        self.futures_pending = True
        return [Submit(self.generation, frozenset(nodes))]

    def _fail_open(self, reason: str, stamp: str) -> list[Instruction]:
        """The dispatcher itself cannot go on: every open node fails with the reason."""
        updates: list[Update] = []
        for i in self._open_tasks():
            if self.phase[i] in OPEN:
                self.phase[i], self.errors[i] = Phase.FAILED, f"DispatcherError: {reason}"
                updates.append(state.node_failed(self.dispatch_id, i, self.errors[i], stamp))
                self._block(i)
        self.awaiting.clear()
        self.futures_pending = False
        return [Record(updates), *self._finish(stamp)]

    def _finish(self, stamp: str) -> list[Instruction]:
        """The final record, with the ``:postprocess:reconstruct`` node's in the same commit."""
        failed = self.failed
        if self.internal_error and not failed:
            failed = {-1: self.internal_error}
        names = [n.name for n in self.graph.nodes]
        self.final = state.dispatch_ended(self.dispatch_id, failed, names, self.cancel_requested,
                                          stamp, None)
        updates: list[Update] = []
        p = self.postprocess
        if p >= 0 and self.phase[p] not in (Phase.COMPLETED, Phase.CANCELLED):
            if self.final.status == state.Status.COMPLETED:
                update, _ = gather_update(self.dispatch_id, self.graph, p, self._parents[p],
                                          self.previews, stamp)
                self.phase[p] = Phase.COMPLETED
                updates.append(update)
            elif self.final.status == state.Status.CANCELLED:
                self.phase[p] = Phase.CANCELLED
                updates.append(state.node_cancelled(self.dispatch_id, p, stamp))
        for i, phase in enumerate(self.phase):
            if phase is Phase.RUNNING:  # never left RUNNING in a final dispatch (#20)
                self.phase[i] = Phase.CANCELLED
                updates.append(state.node_cancelled(self.dispatch_id, i, stamp))
        return [Record(updates), Finish(self.final)]
