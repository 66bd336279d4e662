"""Run dispatches on the Dask cluster: carry out what each dispatch's state machine decides.

Model: every running dispatch has a ``DispatchMachine`` (``machine``), which decides every
status; the runner feeds it events and carries out its instructions against Dask and the
``Recorder``, and decides nothing itself. A dispatch is submitted as ONE Dask graph
(``compile``); each worker reports how each node ended by an *outcome event* (``protocol``),
with its output stored by the worker itself, so outputs never pass through the dispatcher.
An outcome rides in its task's completion message and the scheduler relays it
(``outcomes``): without a network hop from a scheduler on this same loop, else batched through
a topic subscription, always ahead of anything else the scheduler tells this client.

The runner holds Dask futures only for the *sinks* of each submission (tasks whose value no
task consumes): they keep the graph alive, and Dask releases everything else as it would for a
plain graph. Once they have all ended, every task has, and the events that say how arrived
first (an outcome travels in its task's completion, and the relay sends it before it reports
anything else to this client). Events, ended submissions and answers from the workers go
through one inbox, handled in arrival order. A cancel from a request first tells every worker
which nodes never to start and stops them, then waits for the outcomes of those that had ended
already (so no node is recorded CANCELLED above one Dask started on its output), then goes to
the machine at once (it is synchronous, so no event interleaves).
Store updates reach the store through the ``Recorder``; a dispatch's waiters wake only once
its final status is committed, so whatever the API reports is on disk.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from distributed import Client, Future
from distributed.client import FutureCancelledError

from covalent.wire import WorkflowGraph

from . import state
from .compile import Compiled, Preset, compile_graph
from .dask_graph import cancel as cancel_futures
from .dask_graph import (Submission, dask_error_message, live_keys, live_keys_at, submit_chunked,
                         wait_all)
from .errors import NotRunningHere, Unavailable, UnknownExecutor
from .executors import ExecutorTable
from .machine import (OPEN, Cancel, CancelRequested, DispatchMachine, Event, FindRunning,
                      Finish, FuturesDone, Instruction, NodeStarted, Record, RunningElsewhere,
                      Submit, SubmitFailed, ended_event)
from .offload import off_loop
from .outcomes import BATCH_TOPIC, OutcomeRelay, listen
from .protocol import OUTCOME_TOPIC, START_TOPIC, NodeTaskError, now_iso, unpack_outcome
from .recorder import Recorder, dispatch_ended
from .reuse import presets
from .runs import Key, Prepared, Run, release, submission_priority
from .store.leases import dispatch_resource
from .versions import WorkerVersions
from .worker.contact import WorkerContext
from .worker.interrupts import CancelledNodes, cancel_nodes, fence_nodes
from .worker.pool import PoolGuard

if TYPE_CHECKING:
    from .notices import Notices
    from .replica import Replica

log = logging.getLogger("covalent.dispatcher")

CANCELLED_KEPT_S = 600.0  # how long workers keep refusing the nodes of a dispatch that ended
CANCEL_ASK_S = 10.0  # how long a cancel waits for the workers' answer before it goes on
ENDED_WAIT_S = 5.0  # ... and for the outcomes of nodes that ended as it came
TAKEOVER_ROUNDS = 1 << 20  # generations a tenure may use: the next one's start above them
LET_GO_RETRY_S = 1.0  # a finished dispatch whose status cannot be read yet: ask again after


class Runner:
    """Submits dispatches to Dask and carries out their machines' instructions; one per server."""

    def __init__(self, recorder: Recorder, client: Client, *, store_root: str,
                 storage_options: dict[str, Any] | None = None, scheduler: Any = None,
                 public_url: str = "", token: str = "", executors: ExecutorTable | None = None,
                 time_limit_grace: float = 10.0) -> None:
        self.recorder = recorder
        self.client = client
        self.executors = executors or ExecutorTable()
        self.time_limit_grace = time_limit_grace
        self.scheduler = scheduler  # the embedded, in-process Scheduler; None for an external one
        self.store_root = store_root
        self.storage_options = storage_options or {}
        self.public_url = public_url  # how workers reach this server (sublattices)
        self.token = token
        self.runs: dict[str, Run] = {}
        self._inbox: collections.deque[tuple[str, Any]] = collections.deque()
        self._wake = asyncio.Event()
        self._drainer: asyncio.Task[None] | None = None
        self._scheduler_id = ""  # the scheduler this runner started on (``_live_keys``)
        self.versions = WorkerVersions(client)
        self._background: set[asyncio.Task[None]] = set()
        # dispatch -> cancelled nodes (None: all), told to every worker; ended ones expire
        self._cancelled: dict[str, tuple[set[int] | None, float]] = {}
        self._cancel_lock = asyncio.Lock()
        # dispatch -> (lock, holders): a resume and a cancel of a dispatch not running here
        self._placing: dict[str, tuple[asyncio.Lock, int]] = {}
        self.replica: Replica | None = None  # replicas on one database (issue #26)
        self.notices: Notices | None = None  # ... and what they tell each other

    async def start(self) -> None:
        self._scheduler_id = str(self.client.scheduler_info().get("id") or "")
        await listen(self.client, self.scheduler, self._deliver, self._deliver_batch)
        await self.client.register_plugin(CancelledNodes({}), name=CancelledNodes.name)
        await self.client.register_plugin(PoolGuard(), name=PoolGuard.name)
        await self.tell_workers(self.public_url)
        self._drainer = asyncio.create_task(self._drain(), name="covalent-outcomes")

    async def tell_workers(self, url: str) -> None:
        """Give every worker (and every later one) this server's address, token and store."""
        self.public_url = url
        context = WorkerContext(url, self.token, self.store_root, self.storage_options,
                                self.time_limit_grace)
        try:
            await self.client.register_plugin(context, name=WorkerContext.name)
        except Exception as exc:  # the cluster is unreachable: submitting will say so
            log.warning("could not set up the workers: %s", exc)

    async def close(self) -> None:
        tasks = [r.waiter for r in self.runs.values() if r.waiter is not None]
        tasks += list(self._background)
        if self._drainer is not None:
            tasks.append(self._drainer)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.scheduler is not None:
            self.scheduler.remove_plugin(name=OutcomeRelay.name)

    async def check_client(self, versions: Any) -> None:
        """Refuse a client whose pickles the workers could not load (``versions``)."""
        await self.versions.check(versions)

    # -- starting a dispatch -------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def placing(self, dispatch_id: str) -> AsyncIterator[None]:
        """Hold ``dispatch_id`` while a resume reads its stored records and puts its run here, or
        while a cancel acts on those records: a cancel waits for a resume under way (then cancels
        the run it started), and a resume that waited for a cancel finds the dispatch ended."""
        lock, holders = self._placing.get(dispatch_id, (asyncio.Lock(), 0))
        self._placing[dispatch_id] = (lock, holders + 1)
        try:
            async with lock:
                yield
        finally:
            lock, holders = self._placing[dispatch_id]
            if holders == 1:
                del self._placing[dispatch_id]
            else:
                self._placing[dispatch_id] = (lock, holders - 1)

    async def submit(self, dispatch_id: str, graph: WorkflowGraph, preset: dict[int, Preset],
                     started: str = "", failed: Mapping[int, str] | None = None,
                     cancelled: list[int] | None = None, epoch: int = 0,
                     takeover: bool = False, prepared: Prepared | None = None,
                     recorded: frozenset[int] = frozenset()) -> None:
        """Start running a stored dispatch: its machine, then its first submission.

        ``preset`` holds outputs known already; ``failed``/``cancelled`` nodes that ended so
        before a restart; ``recorded`` the nodes stored COMPLETED already (not written again).
        ``started`` (ISO time its root dispatch started) orders the tasks of concurrent
        dispatches: earlier ones run first, so a burst of later dispatches never
        starves them. Never leaves a dispatch RUNNING without a machine: a failure to submit
        is recorded FAILED with the reason. ``epoch``: the tenure of the lease held on it
        (replicas); ``takeover``: another replica ran it, so its submissions get generations
        above any of that replica's, and what still runs on the cluster is found, not re-run.
        ``prepared``: what ``prepare`` made of this new dispatch while it was being stored.
        """
        if prepared is not None:  # built (and its first graph compiled) while it was stored
            machine, first = prepared.machine, prepared.first
        else:  # off the loop: planning 100,000 nodes takes a while (issue #13)
            machine, first = await off_loop(len(graph.nodes), _started, dispatch_id, graph,
                                            preset, failed, cancelled, epoch, takeover, recorded)
        run = Run(machine, submission_priority(started), dict(preset), epoch=epoch,
                  replay=takeover, prepared=prepared)
        self.runs[dispatch_id] = run
        if any(isinstance(i, Submit) for i in first):
            # What is known before anything runs (a record per parameter: 100,000 for a large
            # fan-out) is written once the graph is with Dask, not while it is pickled (#23);
            # any other record of this dispatch is queued after it (_record).
            run.held = [u for i in first if isinstance(i, Record) for u in i.updates]
            first = [i for i in first if not isinstance(i, Record)]
        handed = self._carry_out(run, first)
        if handed is not None:
            # Answer the request once the graph is with Dask (a large graph's first chunk:
            # the rest follows in the background, as any cancel meanwhile would find it).
            await asyncio.shield(handed)

    async def prepare(self, dispatch_id: str, graph: WorkflowGraph,
                      preset: dict[int, Preset]) -> Prepared:
        """For a new dispatch, while it is being stored: build its machine and compile its
        first submission (off the loop for a large graph, while the store writes it: 2 s
        each for 100,000 nodes, #23). ``submit`` takes it up; nothing is sent anywhere."""
        def work() -> Prepared:
            machine, first = _started(dispatch_id, graph, preset)
            ins = next((i for i in first if isinstance(i, Submit)), None)
            if ins is None:
                return Prepared(machine, first)
            try:
                return Prepared(machine, first, ins, self._plan(machine, ins, preset))
            except Exception as exc:  # the submission fails with it, as it would have
                return Prepared(machine, first, ins, error=exc)

        return await off_loop(len(graph.nodes), work)

    def _plan(self, machine: DispatchMachine, ins: Submit, preset: dict[int, Preset]) -> Compiled:
        """The Dask graph of submission ``ins`` (seconds for 100,000 nodes: off the loop)."""
        skip = frozenset(i for i, gathered in enumerate(machine.gather)
                         if not gathered and i not in ins.nodes and i not in preset)
        options = self.executors.resolve(machine.graph)  # UnknownExecutor: nothing runs
        return compile_graph(machine.dispatch_id, machine.graph, preset, options, skip,
                             ins.generation)

    async def cancel(self, dispatch_id: str, node_ids: list[int] | None) -> list[int] | None:
        """Cancel the unfinished nodes (all, or ``node_ids`` and their descendants); returns
        the nodes cancelled, None if the dispatch ended first. The records are committed when
        it returns. ``NotRunningHere`` if this replica's lease on it lapsed (nothing done)."""
        run = self.runs.get(dispatch_id)
        if run is None:
            return None
        self._check_held(run)
        ended = await self._stop_starting(run, node_ids)
        if ended:
            await self._hear_of(run, ended)
        if self.runs.get(dispatch_id) is not run:
            await self.recorder.flush()
            return None  # it ended meanwhile (the nodes the cancel waited for completed it)
        self._check_held(run)
        instructions = run.machine.handle(CancelRequested(node_ids, now_iso()))
        self._carry_out(run, instructions)
        await self.recorder.flush()
        return next((i.nodes for i in instructions if isinstance(i, Cancel)), [])

    def _check_held(self, run: Run) -> None:
        """``NotRunningHere`` (and the run let go) if this replica's lease on it lapsed: a
        cancel carried out here would leave it running where it is taken over."""
        if run.epoch and not self.holds(run.dispatch_id, run.epoch):
            self.lose(run.dispatch_id)
            raise NotRunningHere(run.dispatch_id)

    async def cancel_stored(self, dispatch_id: str, graph: WorkflowGraph,
                            statuses: Mapping[int, str], errors: Mapping[int, str]) -> list[int]:
        """Cancel a dispatch RUNNING on disk that was not resumed yet: its records only."""
        machine = DispatchMachine.restored(dispatch_id, graph, statuses, errors)
        instructions = machine.handle(CancelRequested(None, now_iso()))
        self._carry_out(Run(machine, 0, {}), instructions)
        await self.recorder.flush()
        return next((i.nodes for i in instructions if isinstance(i, Cancel)), [])

    # -- carrying out instructions ---------------------------------------------------------------

    def _carry_out(self, run: Run, instructions: list[Instruction]) -> asyncio.Future[None] | None:
        """Carry out a machine's instructions (in the background, never holding the inbox);
        for a submission they start, a future set once its graph is with Dask (or it ended)."""
        handed: asyncio.Future[None] | None = None
        if run.epoch and not self.holds(run.dispatch_id, run.epoch):
            self.lose(run.dispatch_id)  # another replica may run it now: act on nothing
            return None
        for ins in instructions:
            if isinstance(ins, Record):
                self._record(run, ins.updates)
            elif isinstance(ins, Submit):
                handed = asyncio.get_running_loop().create_future()
                self._spawn(self._submit(run, ins, handed))
            elif isinstance(ins, Cancel):
                # Drop the futures of cancelled sinks: the dispatch must not wait for a
                # cancelled node blocked in a C call (the tasks feeding only them are released
                # too; the machine runs them again unless a worker still runs them).
                cancelled = set(ins.nodes)  # a set: a partial cancel of 40,000 nodes held the
                futures = [f for i, f in run.futures.items()  # loop for seconds with the list
                           if ins.whole or i in cancelled]
                self._spawn(self._cancel_on_cluster(run.dispatch_id, ins, futures))
            elif isinstance(ins, FindRunning):
                self._spawn(self._find_running(run, ins))
            elif isinstance(ins, Finish):
                self._finish(run, ins)
        return handed

    def _record(self, run: Run, updates: list[Any]) -> None:
        if run.held:
            held, run.held = run.held, []
            self.recorder.record(*held)
        self.recorder.record(*updates)

    def holds(self, dispatch_id: str, epoch: int) -> bool:
        """This runner still holds the lease on ``dispatch_id`` at ``epoch`` (replicas)."""
        return self.replica is None or self.replica.epoch(dispatch_resource(dispatch_id)) == epoch

    def lose(self, dispatch_id: str) -> None:
        """The lease is gone: let its futures go (cancel nothing: the next owner finds them)."""
        run = self.runs.pop(dispatch_id, None)
        if run is not None:
            self._let_futures_go(run)

    def _let_futures_go(self, run: Run) -> None:
        """Stop waiting on a run's submission and release its sinks' futures (in the background)."""
        if run.waiter is not None and not run.waiter.done():
            run.waiter.cancel()
        run.waiter = None  # the cancelled task's traceback refers to the run: no cycle left
        sinks = list(run.futures.values())
        run.futures.clear()
        self._spawn(release(sinks))

    def _spawn(self, coro: Any) -> asyncio.Future[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Future[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("runner task failed", exc_info=task.exception())

    async def _submit(self, run: Run, ins: Submit, handed: asyncio.Future[None]) -> None:
        """Compile ``ins.nodes`` into one Dask graph and submit it; on any failure, tell the
        machine (which records it). ``handed`` is set once the graph (a large graph's first
        chunk) is with Dask, or the submission ended."""
        try:
            await self._submit_graph(run, ins, handed)
        finally:
            _settle(handed)

    async def _submit_graph(self, run: Run, ins: Submit, handed: asyncio.Future[None]) -> None:
        machine, d = run.machine, run.dispatch_id
        loop = asyncio.get_running_loop()
        submitted = Submission(handed=lambda: loop.call_soon_threadsafe(_settle, handed))
        try:
            prepared, run.prepared = run.prepared, None
            if prepared is not None and prepared.submit is ins:  # compiled while it was stored
                if prepared.error is not None:
                    raise prepared.error
                assert prepared.compiled is not None
                compiled = prepared.compiled
            else:
                preset = run.known if ins.generation == 1 else await self._stored_inputs(run, ins.nodes)
                compiled = await off_loop(len(machine.graph.nodes), self._plan, machine, ins, preset)
            run.by_key.update((k, i) for i, k in compiled.tasks.items())
            keys = [compiled.tasks[i] for i in compiled.sinks]
            if compiled.dsk:
                # In a thread: Dask pickles the whole graph here (seconds for 100,000 tasks),
                # a large one in chunks (dask_graph.CHUNKED_ABOVE), none after a cancel or
                # once the run is dropped (a replica lost its lease).
                await off_loop(len(compiled.dsk), lambda: submit_chunked(
                    self.client, compiled.dsk, keys, f"{d}-{uuid.uuid4().hex}", run.priority,
                    compiled.options, into=submitted,
                    stop=lambda: machine.done or self.runs.get(d) is not run))
        except Exception as exc:
            self._record(run, [])
            await self._withdraw(submitted)
            nodes = {}
            if isinstance(exc, UnknownExecutor):  # the user's to fix: no traceback in the log
                log.warning("dispatch %s not run: %s", d, exc)
                nodes = {i: f"UnknownExecutor: {exc}" for i in exc.node_ids}
                reason = str(exc)
            else:
                log.exception("submitting dispatch %s failed", d)
                reason = f"{type(exc).__name__}: {exc}"
            self._carry_out(run, run.machine.handle(SubmitFailed(ins.generation, reason,
                                                                 now_iso(), nodes)))
            return
        self._record(run, [])  # (nothing was awaited since the graph left: no event came first)
        if machine.done:  # cancelled while the graph was on its way
            await self._withdraw(submitted)
            return
        if self.runs.get(d) is not run:  # dropped meanwhile (its lease lost): no run of ours
            # would ever let these futures go; cancel nothing, the next owner finds what runs
            await release([*submitted.futures.values(), *submitted.held])
            return
        run.futures = dict(zip(compiled.sinks, submitted.of(keys), strict=True))
        self._spawn(release(submitted.held))  # every chunk is with Dask: they keep what they need
        run.waiter = asyncio.create_task(self._await_futures(run, ins.generation),
                                         name=f"futures-{d}-{ins.generation}")
        log.info("dispatch %s submitted (round %d): %d nodes, %d tasks (chunks: %d), %d inlined",
                 d, ins.generation, len(ins.nodes), len(compiled.dsk), submitted.chunks,
                 len(compiled.inlined))

    async def _withdraw(self, submitted: Submission) -> None:
        """Cancel what a submission handed to Dask, and let its futures go (in slices: the
        100,000 futures of a large one, dropped at once, held the loop for 4 s)."""
        futures = [*submitted.futures.values(), *submitted.held]
        submitted.futures.clear()
        submitted.held.clear()
        await cancel_futures(self.client, futures)
        await release(futures)

    async def _stored_inputs(self, run: Run, nodes: frozenset[int]) -> dict[int, Preset]:
        """The stored outputs the nodes of a later submission consume (read from the store)."""
        await self.recorder.flush()
        wanted = run.machine.inputs_of(nodes)
        records = await self.recorder.store.get_nodes(run.dispatch_id)
        found = await presets(self.recorder.store, {i: records[i] for i in wanted})
        missing = sorted(wanted - set(found))
        if missing:
            raise RuntimeError(f"the stored outputs of nodes {missing[:10]} are gone")
        return found

    async def _await_futures(self, run: Run, generation: int) -> None:
        """Wait until every future of a submission has ended, then queue that fact (with
        the errors Dask raised) behind the events that came before it."""
        futures = list(run.futures.items())
        erred: dict[int, str] = {}
        internal = ""
        try:
            await wait_all([f for _, f in futures])
            erred = await self._dask_errors(run, futures)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never leave a dispatch RUNNING because waiting failed
            log.exception("waiting for dispatch %s failed", run.dispatch_id)
            internal = f"dispatcher error while waiting: {type(exc).__name__}: {exc}"
        self._deliver("futures", (run.dispatch_id, FuturesDone(generation, now_iso(), erred, internal)))

    async def _dask_errors(self, run: Run, futures: list[tuple[int, Future[Any]]]) -> dict[int, str]:
        """The errors Dask itself raised (user failures never reach Dask), by the node to blame:
        a task no worker could run, a worker killed too often, a node stuck past its limit."""
        erred: list[tuple[int, Future[Any]]] = []
        for start in range(0, len(futures), 5000):  # 100,000 sinks: in slices, sharing the loop
            erred += [(i, f) for i, f in futures[start:start + 5000] if f.status == "error"]
            await asyncio.sleep(0)
        out: dict[int, str] = {}
        for node_id, future in erred:
            exc = await future.exception()
            if isinstance(exc, FutureCancelledError | asyncio.CancelledError):
                continue
            blamed = getattr(exc, "task", None)
            culprit = run.by_key.get(blamed, node_id) if isinstance(blamed, tuple) else node_id
            if isinstance(exc, NodeTaskError):
                culprit = exc.node_id
            out.setdefault(culprit, dask_error_message(exc))
        return out

    async def _cancel_on_cluster(self, dispatch_id: str, ins: Cancel,
                                 futures: list[Future[Any]]) -> None:
        """Tell every worker (and every later one) which nodes never to start and to stop,
        and drop the futures of the cancelled sinks."""
        async with self._cancel_lock:
            table = self._cancel_table(dispatch_id, None if ins.whole else ins.nodes)
            try:  # (bounded: a worker whose loop is stuck must not hold every later cancel)
                await asyncio.wait_for(self.client.register_plugin(
                    CancelledNodes(table), name=CancelledNodes.name), CANCEL_ASK_S)
            except Exception as exc:  # an unreachable cluster runs nothing either
                log.warning("could not tell the workers about a cancel: %s", exc)
        await cancel_futures(self.client, futures)
        await release(futures)  # a message per key: 100,000 in slices

    def _cancel_table(self, dispatch_id: str, nodes: Iterable[int] | None
                      ) -> dict[str, list[int] | None]:
        """Add a cancel of ``nodes`` (None: all) of a dispatch to the cancelled nodes every
        worker is told; the whole table (dispatches that ended long ago left out)."""
        now = time.monotonic()
        old = self._cancelled.get(dispatch_id, (set(), now))[0]
        cancelled = None if nodes is None or old is None else old | set(nodes)
        self._cancelled[dispatch_id] = (cancelled, now)
        return {d: None if n is None else sorted(n) for d, (n, t) in self._cancelled.items()
                if d in self.runs or now - t < CANCELLED_KEPT_S}

    async def _stop_starting(self, run: Run, node_ids: list[int] | None) -> list[int]:
        """Before a cancel is decided: tell every worker which nodes never to start any more
        (the nodes it would stop) and stop those running; which of them ended on a worker
        already, their outcomes not heard yet (a cancel is too late for those: they are
        recorded as they ended, and what they let start is stopped as a cancelled node)."""
        targets = run.machine.cancel_targets(node_ids)
        if not targets:
            return []
        whole = not node_ids
        async with self._cancel_lock:
            table = self._cancel_table(run.dispatch_id, None if whole else targets)
            try:
                answers = await asyncio.wait_for(self.client.run(
                    cancel_nodes, table, run.dispatch_id, None if whole else sorted(targets),
                    on_error="return"), CANCEL_ASK_S)
            except Exception as exc:  # unreachable workers start nothing either
                log.warning("could not tell the workers about a cancel: %s", exc)
                return []
        ended = {n for a in answers.values() if isinstance(a, list) for n in a}
        return sorted(ended & targets)

    async def _hear_of(self, run: Run, nodes: list[int]) -> None:
        """Wait (a while) until the outcomes of ``nodes``, which ended on a worker, are heard."""
        deadline = time.monotonic() + ENDED_WAIT_S
        while self.runs.get(run.dispatch_id) is run and any(
                run.machine.phase[i] in OPEN for i in nodes):
            if time.monotonic() > deadline:
                log.warning("dispatch %s: no outcome heard of nodes %s, which ended before a "
                            "cancel; recorded CANCELLED", run.dispatch_id, nodes)
                return
            await asyncio.sleep(0.005)

    async def _find_running(self, run: Run, ins: FindRunning) -> None:
        """Which of these nodes Dask may still run: those whose task the scheduler still has,
        and those a worker runs (released, or ended a moment ago). Every worker is told first
        that no submission so far may start them any more (so none can start after it
        answered), since the machine submits the others again."""
        if ins.delay:
            await asyncio.sleep(ins.delay)
        found: set[int] = set()
        try:  # whatever fails here, the machine gets its answer (it waits for one)
            if run.replay:
                run.replay = False
                await self._replay(run)
            asked = set(ins.nodes)
            keys = [k for k, i in run.by_key.items() if i in asked]
            try:
                live = await self._live_keys(keys)
            except SchedulerReplaced:
                return  # no answer, nothing fenced or submitted there: the server restarts
            found |= {run.by_key[k] for k, to_run in live.items() if to_run}
            # A task in memory has ended and its outcome is on its way, unless it was so at the
            # last ask already (a second apart): it ended without one (below a parent Dask
            # computed again without its output, or its worker died after it left), so it runs
            # again rather than being waited for forever (a dispatch stuck RUNNING, #20)
            ended = {run.by_key[k] for k, to_run in live.items() if not to_run} - found
            found |= ended - run.ended_unheard
            run.ended_unheard = ended
            answers = await asyncio.wait_for(self.client.run(
                fence_nodes, run.dispatch_id, sorted(asked - found), ins.generation,
                on_error="return"), 30)
            for nodes in answers.values():
                if isinstance(nodes, list):
                    found.update(nodes)
        except Exception as exc:  # nobody answers: what is not found runs again
            log.warning("could not ask the cluster what dispatch %s still runs: %s",
                        run.dispatch_id, exc)
        self._deliver("running", (run.dispatch_id, RunningElsewhere(ins.generation,
                                                                    frozenset(found), now_iso())))

    async def _replay(self, run: Run) -> None:
        """Taken over: the start and outcome events the scheduler kept for this dispatch (the
        relay's batches included), queued before the answer of ``_find_running`` (nodes that
        ended while no replica listened are recorded, not re-run; one recorded already changes
        nothing)."""
        for topic in (START_TOPIC, OUTCOME_TOPIC, BATCH_TOPIC):
            try:
                events = await asyncio.wait_for(self.client.get_events(topic), 30)
            except Exception as exc:  # what is not heard of runs again
                log.warning("could not read the scheduler's %s events: %s", topic, exc)
                continue
            for kind, msg in kept_events(topic, events, run.dispatch_id):
                self._deliver(kind, msg)

    async def _live_keys(self, keys: list[Key]) -> dict[Key, bool]:
        """The keys the scheduler still means to run (True) or holds in memory (False)."""
        if self.scheduler is not None:
            return live_keys(keys, dask_scheduler=self.scheduler)
        answered: str
        found: dict[Key, bool]
        answered, found = await self.client.run_on_scheduler(live_keys_at, keys)
        if self._scheduler_id and answered != self._scheduler_id:
            # A scheduler started again at the same address, which the client reached again:
            # this server restarts within CLIENT_CHECK_S (app's _watch_cluster) and resumes.
            # Fences and submissions sent there meanwhile made the workers refuse the resumed
            # dispatch's first rounds, and wait 30 s for nodes whose outcomes went to this client.
            raise SchedulerReplaced(answered)
        return found

    def _finish(self, run: Run, ins: Finish) -> None:
        log.info("dispatch %s %s", run.dispatch_id, ins.update.status)
        self._record(run, [])
        self.recorder.ended(ins.update)
        self.runs.pop(run.dispatch_id, None)
        if run.epoch and self.replica is not None:
            self._spawn(self._let_go(run.dispatch_id))
        self._let_futures_go(run)

    async def _let_go(self, dispatch_id: str) -> None:
        """Release a finished dispatch's lease once its final status is committed (renewed
        until then: a final write that fails leaves it RUNNING, for a replica to resume)."""
        assert self.replica is not None
        resource = dispatch_resource(dispatch_id)
        await dispatch_ended(self.recorder, dispatch_id)
        while self.replica.owner_epoch(resource) is not None and not self.recorder.closing:
            try:  # the database may be out for a while: then ask again, and release after
                status = await self.recorder.store.get_status(dispatch_id) or state.PENDING
                if state.is_terminal(status):
                    if self.notices is not None:  # cancels not carried out before it ended
                        await self.notices.answer_ended(dispatch_id, status)
                    await self.replica.release(resource)
                    return
            except Unavailable as exc:
                log.warning("dispatch %s ended; its lease is released once the store answers "
                            "(%s)", dispatch_id, exc)
            await asyncio.sleep(LET_GO_RETRY_S)  # the store is out, or retries the final write

    # -- what the workers report ---------------------------------------------------------------

    def _deliver_batch(self, event: tuple[float, list[Any]]) -> None:
        self._inbox.extend((OUTCOME_TOPIC, msg) for msg in event[1])
        self._wake.set()

    def _deliver(self, topic: str, msg: Any) -> None:
        """Queue an event (or an ended submission, or a worker's answer) for ``_drain``, in order."""
        self._inbox.append((topic, msg))
        self._wake.set()

    async def _drain(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            handled = 0
            while self._inbox:
                handled += 1
                if handled % 256 == 0:
                    await asyncio.sleep(0)  # a burst of 100,000 events must not hold the loop
                topic, msg = self._inbox.popleft()
                try:
                    self._dispatch_event(topic, msg)
                except asyncio.CancelledError:
                    raise
                except Exception:  # one bad event must not stop the others
                    log.exception("could not process %s event %r", topic, msg)

    def _dispatch_event(self, topic: str, msg: Any) -> None:
        if topic in (OUTCOME_TOPIC, START_TOPIC):
            if topic == OUTCOME_TOPIC:
                msg = unpack_outcome(msg)
            run = self.runs.get(msg.get("d", ""))
            if run is None:
                return  # a dispatch that ended already (cancelled) or was resumed anew
            if topic == OUTCOME_TOPIC:
                event: Event = ended_event(msg)
            else:
                event = NodeStarted(int(msg["n"]), msg["t"], msg.get("worker"))
        else:
            dispatch_id, event = msg
            run = self.runs.get(dispatch_id)
            if run is None:
                return
        self._carry_out(run, run.machine.handle(event))


def kept_events(topic: str, events: Any, dispatch_id: str) -> list[tuple[str, Any]]:
    """The start and outcome events of ``dispatch_id`` among what the scheduler kept under
    ``topic`` (``client.get_events``: a relayed batch comes back as a tuple), as the runner's
    inbox takes them.

    >>> from dispatcher.protocol import pack_outcome
    >>> mine, other = pack_outcome({"d": "a", "n": 1}), pack_outcome({"d": "b", "n": 1})
    >>> kept_events(BATCH_TOPIC, [(0.0, (mine, other)), (1.0, "not ours")], "a") == [
    ...     (OUTCOME_TOPIC, mine)]
    True
    >>> kept_events(START_TOPIC, [(0.0, {"d": "a", "n": 2}), (0.1, {"d": "b"})], "a")
    [('covalent-node-start', {'d': 'a', 'n': 2})]
    """
    kind = START_TOPIC if topic == START_TOPIC else OUTCOME_TOPIC
    out = []
    for _, msg in events:
        batch = topic == BATCH_TOPIC and isinstance(msg, list | tuple)
        for one in (msg if batch else [msg]):
            if _of_dispatch(topic, one) == dispatch_id:
                out.append((kind, one))
    return out


def _of_dispatch(topic: str, msg: Any) -> str | None:
    """The dispatch a kept start or (packed) outcome event belongs to; None if it is not one."""
    try:
        return str((msg if topic == START_TOPIC else unpack_outcome(msg))["d"])
    except Exception:  # another program's event on a shared scheduler
        return None


def _started(dispatch_id: str, graph: WorkflowGraph, preset: dict[int, Preset],
             failed: Mapping[int, str] | None = None, cancelled: list[int] | None = None,
             epoch: int = 0, takeover: bool = False, recorded: frozenset[int] = frozenset()
             ) -> tuple[DispatchMachine, list[Instruction]]:
    """A dispatch's machine and the instructions it starts with (``Runner.submit``), without
    the records of nodes ``recorded`` COMPLETED already: they would change nothing (a
    COMPLETED node's record never changes), and a resumed 100,000-node fan-out wrote its
    100,000 parameters again, seconds that any record after them waited behind."""
    machine = DispatchMachine(dispatch_id, graph, known=preset, failed=failed,
                              cancelled=cancelled or (), cancel_requested=bool(cancelled),
                              clock=now_iso)
    machine.generation = (epoch - 1) * TAKEOVER_ROUNDS if takeover else 0
    first = machine.start(now_iso(), find_running=takeover)
    if recorded:
        for ins in first:
            if isinstance(ins, Record):
                ins.updates[:] = [u for u in ins.updates if not (
                    isinstance(u, state.NodeUpdate) and u.node_id in recorded
                    and u.status == state.Status.COMPLETED)]
    return machine, first


class SchedulerReplaced(Exception):
    """The scheduler that answered is not the one this runner started on."""


def _settle(handed: asyncio.Future[None]) -> None:
    if not handed.done():
        handed.set_result(None)
