"""Tell the dispatcher a node is RUNNING once it has run for a while."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

from ..protocol import START_TOPIC


class Announcer:
    """Announces a node as RUNNING once it has run for ``delay`` seconds.

    A start event per node would cost the scheduler a message per task, as much as a short
    task itself; nodes that finish sooner go straight to COMPLETED (their start time travels
    with the outcome). A node's ``started`` and ``finished`` only put and take its entry in a
    dict (no lock, no wake-up: they run in every task, #23); one thread per worker process
    looks at the entries at most every ``delay`` seconds while any is there, and sleeps while
    none is.
    """

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.running: dict[int, tuple[float, Any, dict[str, Any]]] = {}  # token -> due, worker, msg
        self.counter = itertools.count()
        self.wake = threading.Event()
        self.sleeping = False
        self.thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def started(self, dispatch_id: str, node_id: int, start: str) -> int | None:
        try:
            from distributed import get_worker

            worker = get_worker()
        except ValueError:
            return None  # not on a worker (a direct call in a test): nobody to tell
        token = next(self.counter)
        self.running[token] = (time.monotonic() + self.delay, worker,
                               {"d": dispatch_id, "n": node_id, "t": start})
        if self.thread is None:
            self._start()
        elif self.sleeping:  # (read after the entry is in: see _loop)
            self.sleeping = False  # one wake-up, not one per node until the thread runs
            self.wake.set()
        return token

    def finished(self, token: int | None) -> None:
        if token is not None:
            self.running.pop(token, None)

    def _start(self) -> None:
        with self._start_lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self._loop, name="covalent-announcer",
                                               daemon=True)
                self.thread.start()

    def _loop(self) -> None:
        while True:
            if not self.running:
                # Say it sleeps, then look again: a node that came in between either is seen
                # here or sees ``sleeping`` and sets ``wake``.
                self.wake.clear()
                self.sleeping = True
                if not self.running:
                    self.wake.wait()
                    # Woken by a node that just started: none can be due sooner than this,
                    # and nodes shorter than it come and go meanwhile without a wake-up each.
                    time.sleep(self.delay)
                self.sleeping = False
                continue
            now = time.monotonic()
            entries = list(self.running.items())  # (one C call: no node comes or goes in it)
            for token, (due, worker, msg) in entries:
                if due <= now and self.running.pop(token, None) is not None:
                    try:
                        worker.log_event(START_TOPIC, msg)
                    except Exception:  # a closing worker: the outcome still carries the start
                        pass
            # Nodes that came in since ``entries`` are due a full delay after ``now`` or later.
            left = [due - now for _, (due, _, _) in entries if due > now]
            time.sleep(min(left) if left else self.delay)


announcer = Announcer(0.05)
