"""The LoopWatch names the line that holds the server's event loop, once per stall."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from dispatcher.loopwatch import LoopWatch
from tests.conftest import wait_until


def _logged(caplog: pytest.LogCaptureFixture, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not any(text in r.getMessage() for r in caplog.records):
        assert time.monotonic() < deadline, f"{text!r} not logged within {timeout} s"
        time.sleep(0.01)


def _hold_the_loop(seconds: float) -> None:
    time.sleep(seconds)  # the stall under test: blocking work on the loop, as a parse would


async def test_a_stalled_loop_is_logged_once_with_the_line_that_holds_it(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="covalent.dispatcher")
    watch = LoopWatch(asyncio.get_running_loop(), threshold_s=0.3, interval_s=0.05)
    watch.start()
    try:
        await asyncio.sleep(0.2)  # a loop that answers: nothing to say
        assert watch.stalls == 0
        _hold_the_loop(1.0)
        await wait_until(lambda: any("answered again" in r.getMessage() for r in caplog.records),
                         timeout=5)
    finally:
        watch.stop()
    messages = [r.getMessage() for r in caplog.records]
    [blocked] = [m for m in messages if m.startswith("event loop blocked")]
    assert "in _hold_the_loop" in blocked and "time.sleep(seconds)" in blocked
    [answered] = [m for m in messages if "answered again" in m]
    assert watch.stalls == 1 and 0.9 <= watch.longest_s < 3.0, (watch.longest_s, answered)


async def test_a_process_that_did_not_run_is_not_a_stalled_loop(
        caplog: pytest.LogCaptureFixture) -> None:
    """A SIGSTOP stops the watcher too; on waking it finds the heartbeat old and the loop idle,
    waiting for events: the process did not run, nothing held the loop (no stack, no stall)."""
    caplog.set_level(logging.INFO, logger="covalent.dispatcher")
    watch = LoopWatch(asyncio.get_running_loop(), threshold_s=0.3, interval_s=0.05)
    watch.start()
    try:
        assert watch._handle is not None
        watch._handle.cancel()  # the heartbeat stops while the loop stays free, as in a pause
        watch._beat -= 5.0
        # Waited for in a thread: the loop must stay idle in its select meanwhile.
        await asyncio.to_thread(_logged, caplog, "did not run", 5.0)
    finally:
        watch.stop()
    assert watch.stalls == 0
    assert not [r for r in caplog.records if "blocked" in r.getMessage()]
