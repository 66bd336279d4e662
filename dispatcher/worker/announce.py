"""Tell the dispatcher a node is RUNNING once it has run for a while."""

from __future__ import annotations

from typing import Any

from ..protocol import START_TOPIC
from .deadlines import Deadlines


class Announcer(Deadlines[tuple[Any, dict[str, Any]]]):
    """Announces a node as RUNNING once it has run for ``delay`` seconds.

    A start event per node would cost the scheduler a message per task, as much as a short
    task itself; nodes that finish sooner go straight to COMPLETED (their start time travels
    with the outcome). One thread per worker process sleeps until the earliest deadline of a
    node still running; finished nodes are skipped without waking it.
    """

    def __init__(self, delay: float) -> None:
        super().__init__("covalent-announcer")
        self.delay = delay

    def started(self, dispatch_id: str, node_id: int, start: str) -> int | None:
        try:
            from distributed import get_worker

            worker = get_worker()
        except ValueError:
            return None  # not on a worker (a direct call in a test): nobody to tell
        msg = {"d": dispatch_id, "n": node_id, "t": start}
        return self._push((worker, msg), self.delay)

    def finished(self, token: int | None) -> None:
        if token is not None:
            with self.cv:
                self.running.pop(token, None)

    def _loop(self) -> None:
        while True:
            with self.cv:
                worker, msg = self.running.pop(self._wait_due())
            try:
                worker.log_event(START_TOPIC, msg)
            except Exception:  # a closing worker: the outcome still carries the start time
                pass


announcer = Announcer(0.05)
