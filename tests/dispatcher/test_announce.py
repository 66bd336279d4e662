"""The announcer (dispatcher/worker/announce.py), in this process with a stand-in worker: a node
that runs past the delay is announced RUNNING once, a node that ends sooner never is, also when
nodes start and end from many threads at once and when the announcer's thread was asleep."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import distributed
import pytest

from dispatcher.protocol import START_TOPIC
from dispatcher.worker.announce import Announcer

DELAY = 0.05


def wait_until_sync(predicate: Any, timeout: float) -> None:
    """Poll ``predicate`` until truthy; fail after ``timeout`` seconds (the threads here are
    not asyncio's)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.005)


class _Worker:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any], float]] = []

    def log_event(self, topic: str, msg: dict[str, Any]) -> None:
        self.events.append((topic, msg, time.monotonic()))


@pytest.fixture
def worker(monkeypatch: pytest.MonkeyPatch) -> _Worker:
    w = _Worker()
    monkeypatch.setattr(distributed, "get_worker", lambda: w)
    return w


def test_only_nodes_that_outlast_the_delay_are_announced_once(worker: _Worker) -> None:
    announcer = Announcer(DELAY)
    rng = random.Random(23)
    lasted: dict[int, float] = {}  # node -> how long it ran (monotonic)

    def node(n: int, seconds: float) -> None:
        begin = time.monotonic()
        token = announcer.started("d", n, "t")
        time.sleep(seconds)
        lasted[n] = time.monotonic() - begin
        announcer.finished(token)

    plan = [(n, rng.choice([0.0, 0.001, 0.01, 0.12, 0.2])) for n in range(120)]
    for round_start in range(0, len(plan), 30):  # 4 rounds, with the thread asleep in between
        threads = [threading.Thread(target=node, args=p) for p in plan[round_start:round_start + 30]]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        wait_until_sync(lambda: not announcer.running, timeout=5)
        wait_until_sync(lambda: announcer.sleeping, timeout=5)  # idle: the next round wakes it

    announced = [msg["n"] for topic, msg, _ in worker.events]
    assert all(topic == START_TOPIC for topic, _, _ in worker.events)
    assert len(announced) == len(set(announced)), "a node was announced twice"
    long_ones = {n for n, s in plan if s >= 0.12}
    short_ones = {n for n, s in plan if s <= 0.01 and lasted[n] < DELAY}  # (a slow machine)
    assert long_ones <= set(announced), f"not announced: {sorted(long_ones - set(announced))}"
    assert not short_ones & set(announced), f"announced: {sorted(short_ones & set(announced))}"
    assert worker.events[0][1] == {"d": "d", "n": worker.events[0][1]["n"], "t": "t"}


def test_a_node_started_while_the_thread_sleeps_is_announced_after_the_delay(worker: _Worker
                                                                             ) -> None:
    announcer = Announcer(DELAY)
    for n in range(3):  # each time from an idle announcer (asleep on its event)
        if n:
            wait_until_sync(lambda: announcer.sleeping, timeout=5)
        begin = time.monotonic()
        token = announcer.started("d", n, "t")
        wait_until_sync(lambda: len(worker.events) == n + 1, timeout=5)
        announcer.finished(token)
        assert worker.events[-1][1]["n"] == n
        assert worker.events[-1][2] - begin >= DELAY
    assert not announcer.running


def test_off_a_worker_nothing_is_kept() -> None:
    announcer = Announcer(DELAY)
    assert announcer.started("d", 1, "t") is None  # a direct call in a test
    announcer.finished(None)
    assert announcer.thread is None and not announcer.running
