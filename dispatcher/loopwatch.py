"""Say where the server's event loop is stuck when it stops answering: the LoopWatch.

Every request, lease renewal and outcome goes through one event loop; work that holds it for
seconds (a 50 MB graph parsed on it, 100,000 futures dropped at once) stalls them all, and past
10 s a replica's own leases lapse. A thread beside the loop sees the loop's heartbeat stop and
logs the loop thread's stack once per stall (then how long the stall lasted), so the log names
the line to move off the loop. A loop found idle, waiting for events, did not stall: the whole
process did not run (a SIGSTOP, a starved machine), which is logged as that. It costs a
callback every ``interval`` on the loop.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback
from types import FrameType

log = logging.getLogger("covalent.dispatcher")

THRESHOLD_S = 2.0  # a stall this long is logged (distributed itself warns from 3 s)
FRAMES = 12  # the innermost frames of the stack logged


class LoopWatch:
    """Watch ``loop`` (from the thread that runs it) until ``stop``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, threshold_s: float = THRESHOLD_S,
                 interval_s: float = 0.25) -> None:
        self.loop = loop
        self.threshold_s = threshold_s
        self.interval_s = interval_s
        self.stalls = 0  # stalls logged so far
        self.longest_s = 0.0
        self._beat = time.monotonic()
        self._loop_thread = threading.get_ident()
        self._stop = threading.Event()
        self._handle: asyncio.TimerHandle | None = None
        self._thread = threading.Thread(target=self._watch, name="covalent-loopwatch",
                                        daemon=True)

    def start(self) -> None:
        self._tick()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._handle is not None:
            self._handle.cancel()
        self._thread.join(5)

    def _tick(self) -> None:
        self._beat = time.monotonic()
        self._handle = self.loop.call_later(self.interval_s, self._tick)

    def _watch(self) -> None:
        stalled_since: float | None = None  # the last beat before the stall reported
        paused = False
        while not self._stop.wait(self.interval_s):
            beat = self._beat
            lag = time.monotonic() - beat
            if stalled_since is None:
                if lag < self.threshold_s:
                    continue
                stalled_since = beat
                frame = sys._current_frames().get(self._loop_thread)
                # A loop waiting in select with its timer overdue did not run at all: the whole
                # process was stopped (SIGSTOP, a suspended machine) or starved of CPU.
                paused = frame is not None and _waiting_for_events(frame)
                if paused:
                    log.info("the process did not run for %.1f s (stopped, or starved of "
                             "CPU); its event loop was idle", lag)
                else:
                    self.stalls += 1
                    log.warning("event loop blocked for %.1f s so far, in:\n%s", lag,
                                _stack(frame))
            elif beat != stalled_since:
                if not paused:
                    took = beat - stalled_since
                    self.longest_s = max(self.longest_s, took)
                    log.warning("event loop answered again after %.1f s", took)
                stalled_since = None


def _waiting_for_events(frame: FrameType) -> bool:
    return frame.f_code.co_name == "select" and frame.f_code.co_filename.endswith("selectors.py")


def _stack(frame: FrameType | None) -> str:
    if frame is None:
        return "  (the loop's thread is gone)"
    return "".join(traceback.format_stack(frame)[-FRAMES:]).rstrip()
