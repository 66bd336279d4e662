"""Items due at a time in a worker process, and the one thread that waits for them.

The time-limit watchdog keeps per-node entries with a deadline; an entry removed before its
deadline is skipped without waking the thread. (The announcer, whose entries come and go with
every task, keeps a plain dict instead: ``announce``.)
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from typing import Generic, TypeVar

T = TypeVar("T")


class Deadlines(Generic[T]):
    """``running`` entries by token, a heap of their deadlines, and a daemon thread running
    ``_loop`` (started with the first entry). Subclasses write ``_loop`` with ``_wait_due``."""

    def __init__(self, thread_name: str) -> None:
        self.thread_name = thread_name
        self.cv = threading.Condition()
        self.heap: list[tuple[float, int]] = []
        self.running: dict[int, T] = {}
        self.counter = itertools.count()
        self.thread: threading.Thread | None = None

    def _push(self, entry: T, delay: float) -> int:
        """Register ``entry``, due in ``delay`` seconds; its token."""
        with self.cv:
            token = next(self.counter)
            self.running[token] = entry
            self._due_in(token, delay)
            if self.thread is None:
                self.thread = threading.Thread(target=self._loop, name=self.thread_name,
                                               daemon=True)
                self.thread.start()
        return token

    def _due_in(self, token: int, delay: float) -> None:
        """(Again) make ``token`` due in ``delay`` seconds; call with ``cv`` held."""
        heapq.heappush(self.heap, (time.monotonic() + delay, token))
        if self.heap[0][1] == token:
            self.cv.notify()

    def _wait_due(self) -> int:
        """With ``cv`` held: block until a still-registered entry is due; its token."""
        while True:
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
            return token

    def _loop(self) -> None:
        raise NotImplementedError
