"""Tell the dispatcher a node is RUNNING once it has run for a while."""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from typing import Any

from ..protocol import START_TOPIC


class Announcer:
    """Announces a node as RUNNING once it has run for ``delay`` seconds.

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

    def started(self, dispatch_id: str, node_id: int, start: str) -> int | None:
        try:
            from distributed import get_worker

            worker = get_worker()
        except ValueError:
            return None  # not on a worker (a direct call in a test): nobody to tell
        msg = {"d": dispatch_id, "n": node_id, "t": start}
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


announcer = Announcer(0.05)
