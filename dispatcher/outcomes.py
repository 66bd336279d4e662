"""Carry a node's outcome from its worker to the dispatcher with the task's own completion.

A node's outcome event (``protocol.outcome_completed`` / ``outcome_failed``) is the last thing its
task produces. It used to travel as a Dask event of its own (``Worker.log_event``): one more
message per task on the worker's stream, through the scheduler's event broker, and one more
write to the dispatcher's client, which cost as much as the task itself (issue #23). Now:

1. The task puts its final outcome in its Dask task metadata (``report``), which the worker
   sends to the scheduler inside the task's own ``task-finished`` message: outcome and
   completion arrive together, or are lost together with the worker (then Dask runs the node
   again, as before).
2. On the scheduler, ``OutcomeRelay`` takes the outcome out of that message before Dask looks at
   it (so it reaches the dispatcher even for a task the scheduler has released meanwhile, and
   Dask never keeps it in memory) and sends the outcomes of many tasks as one event to the
   clients subscribed to ``BATCH_TOPIC``, at most ``interval`` seconds later, and always before
   anything else the scheduler sends such a client (a sink's completion, an error): the
   dispatcher still hears how every node ended before it hears that its futures have.
   With the scheduler in the dispatcher's own process, the relay hands each outcome over at
   once instead, without a message.
3. A task the scheduler released while it ran (after an error Dask raised itself) sends no
   ``task-finished``: ``OutcomeCarrier``, a worker plugin, sees it leave the worker and logs
   its outcome as an ordinary event (``OUTCOME_TOPIC``), as do outcomes that are not a task's
   last word (a failed attempt about to be retried, a time limit the watchdog enforced) and
   every outcome on a worker without the carrier (a relay that could not be installed).

What a crash leaves: the worker dies before ``task-finished`` left it: neither the outcome nor
the completion reached the scheduler, and Dask runs the node again (its output, written under
its content address, is written again or found). The scheduler dies with outcomes in the relay's
buffer: the cluster is gone with them, as the Dask futures are; the dispatch stays RUNNING and is
resumed, as after any scheduler loss. The dispatcher dies: outcomes relayed to it are lost
unless recorded; its RUNNING nodes run again when it resumes the dispatch, as before. With
replicas on a shared scheduler, each relayed batch also stays in the scheduler's event log
(``BATCH_TOPIC``, as long as its ``low-level-log-length`` keeps it), so a replica taking a
dispatch over records what the dead one was sent or would have been sent (``Runner._replay``).

Dask's private API used here (``tests/dispatcher/test_outcomes.py`` fails if it changes): the
worker's ``TaskState.metadata`` (sent in ``TaskFinishedMsg.metadata``), the scheduler's
``stream_handlers["task-finished"]``, ``client_comms`` and its event broker's topics (their
subscribers and kept events).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin, WorkerPlugin
from distributed.metrics import time

from .protocol import OUTCOME_TOPIC, START_TOPIC, pack_outcome

log = logging.getLogger("covalent.dispatcher")

BATCH_TOPIC = "covalent-outcomes"  # the relay's events: a list of outcome events
META = "covalent-outcome"  # the key of the outcome in a task's Dask metadata
RELAY_INTERVAL_S = 0.02

Deliver = Callable[[str, Any], None]


async def listen(client: Any, scheduler: Any, deliver: Deliver,
                 deliver_batch: Callable[[Any], None]) -> None:
    """Have the workers' outcome and start events delivered: from a scheduler in this process
    (``scheduler``) without a message, else by subscription, the outcomes relayed from the
    tasks' completions once the relay and the carriers are installed."""
    if scheduler is not None:
        relay = OutcomeRelay(deliver)
        await relay.start(scheduler)
        scheduler.add_plugin(relay, name=OutcomeRelay.name)
    else:
        for topic in (OUTCOME_TOPIC, START_TOPIC):
            client.subscribe_topic(topic, lambda ev, t=topic: deliver(t, ev[1]))
        client.subscribe_topic(BATCH_TOPIC, deliver_batch)
        try:
            await client.register_plugin(OutcomeRelay(), name=OutcomeRelay.name)
        except Exception as exc:  # the workers go on logging outcomes as events
            log.warning("could not install the outcome relay on the scheduler (outcomes "
                        "travel as events of their own): %s", exc)
            return
    await client.register_plugin(OutcomeCarrier(), name=OutcomeCarrier.name)


def report(event: dict[str, Any], final: bool) -> None:
    """On a worker: send a node's outcome event; ``final``: the task returns right after it,
    so it may ride in the task's completion."""
    from distributed import get_worker

    try:
        worker = get_worker()
    except ValueError:
        return  # not on a worker (a direct call in a test)
    packed = pack_outcome(event)  # the scheduler adds the worker's address to a logged one
    carrier = worker.plugins.get(OutcomeCarrier.name)
    if final and isinstance(carrier, OutcomeCarrier) and carrier.carry(worker, packed):
        return
    worker.log_event(OUTCOME_TOPIC, packed)


class OutcomeCarrier(WorkerPlugin):
    """On each worker: put a task's final outcome in its completion message, and log it as an
    event when the task leaves the worker without one (it was released while it ran)."""

    name = "covalent-outcome-carrier"
    idempotent = True  # registered by every dispatcher of a shared cluster: the first stays

    def __init__(self) -> None:
        self.pending: dict[Any, dict[str, Any]] = {}
        self.worker: Any = None

    def setup(self, worker: Any) -> None:
        self.worker = worker

    def carry(self, worker: Any, event: dict[str, Any]) -> bool:
        """From the task's thread: attach ``event`` to the running task; False if it cannot."""
        try:
            key = worker.get_current_task()
        except Exception:  # not in a task's thread
            return False
        ts = worker.state.tasks.get(key)
        if ts is None or ts.state not in ("executing", "long-running"):
            return False  # released already: its completion would not be sent
        self.pending[key] = event
        ts.metadata = {**ts.metadata, META: event}
        return True

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        event = self.pending.get(key)
        if event is None:
            return
        if start in ("executing", "long-running") and finish == "memory":
            del self.pending[key]  # went with task-finished
            ts = self.worker.state.tasks.get(key)
            if ts is not None:  # a new dict: the message being sent keeps the old one
                ts.metadata = {k: v for k, v in ts.metadata.items() if k != META}
        elif start in ("executing", "long-running", "cancelled", "resumed"):
            del self.pending[key]  # no task-finished carries it: an event of its own
            self.worker.log_event(OUTCOME_TOPIC, event)


class OutcomeRelay(SchedulerPlugin):
    """On the scheduler: forward the outcomes that ride in ``task-finished`` messages.

    ``deliver`` (the scheduler runs in the dispatcher's process): hand each to the runner at
    once. Otherwise batch them for the clients subscribed to ``BATCH_TOPIC``.
    """

    name = "covalent-outcome-relay"
    idempotent = True

    def __init__(self, deliver: Deliver | None = None, interval: float = RELAY_INTERVAL_S) -> None:
        self.deliver = deliver
        self.interval = interval
        self.buffer: list[dict[str, Any]] = []
        self.scheduler: Any = None
        self._timer: Any = None

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        handlers = scheduler.stream_handlers
        original = getattr(handlers["task-finished"], "covalent_original", handlers["task-finished"])

        def task_finished(**msg: Any) -> Any:
            relay = scheduler.plugins.get(OutcomeRelay.name)
            metadata = msg.get("metadata")
            if metadata and META in metadata:
                event = metadata.pop(META)
                if isinstance(relay, OutcomeRelay) and isinstance(event, dict):
                    # the address this stream belongs to, as Scheduler.log_worker_event adds it
                    relay.relay({"o": event.get("o"), "worker": msg.get("worker")})
            return original(**msg)

        task_finished.covalent_original = original  # type: ignore[attr-defined]
        handlers["task-finished"] = task_finished

    async def close(self) -> None:
        self.flush()

    def log_event(self, topic: str, msg: Any) -> None:
        if self.deliver is not None and topic in (OUTCOME_TOPIC, START_TOPIC):
            self.deliver(topic, msg)  # in-process: the workers' events, without a message

    def relay(self, event: dict[str, Any]) -> None:
        if self.deliver is not None:
            self.deliver(OUTCOME_TOPIC, event)
            return
        self.buffer.append(event)
        if len(self.buffer) == 1:
            for comm in self._subscribers():  # from now on, they wait for the buffer
                self._guard(comm)
            self._timer = self.scheduler.loop.call_later(self.interval, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.buffer:
            return
        batch, self.buffer = self.buffer, []
        event = (time(), batch)
        # Kept in the scheduler's event log as well (bounded by its low-level-log-length): a
        # replica taking over a dispatch reads there what was relayed while nobody listened.
        self.scheduler._broker._topics[BATCH_TOPIC].publish(event)
        msg = {"op": "event", "topic": BATCH_TOPIC, "event": event}
        for comm in self._subscribers():
            self._guard(comm)
            try:
                comm.covalent_send(msg)
            except Exception as exc:  # a closed comm: that client is gone
                log.info("could not relay outcomes to %s: %s", comm, exc)

    def _subscribers(self) -> list[Any]:
        """The batched comms of the clients subscribed to ``BATCH_TOPIC``."""
        topic = self.scheduler._broker._topics.get(BATCH_TOPIC)
        if topic is None:
            return []
        comms = (self.scheduler.client_comms.get(c) for c in topic.subscribers)
        return [c for c in comms if c is not None]

    def _guard(self, comm: Any) -> None:
        """Make everything else the scheduler sends this client wait for the outcomes relayed
        before it (the dispatcher must hear how nodes ended before their futures end)."""
        if getattr(comm, "covalent_send", None) is not None:
            return
        original = comm.send

        def send(*msgs: Any) -> None:
            relay = self.scheduler.plugins.get(OutcomeRelay.name)
            if isinstance(relay, OutcomeRelay) and relay.buffer:
                relay.flush()
            original(*msgs)

        comm.covalent_send = original
        comm.send = send
