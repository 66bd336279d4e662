"""A cancelled node's thread and processes (dispatcher/worker/interrupts.py), in this process:
what an interrupted node started is killed and its pipes closed; a node that ends keeps them;
a node is interrupted once, so its own clean-up runs to its end."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import Any

from dispatcher.worker.interrupts import TaskInterrupted, interrupts
from dispatcher.worker.run import _leave


def _node(box: dict[str, Any], started: threading.Event, cmd: list[str]) -> None:
    """What run_node does around user code that starts a process and then keeps busy."""
    try:
        interrupts.enter("d-interrupts", 1)
        try:
            box["popen"] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            started.set()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:  # pure Python: the exception lands here
                time.sleep(0.01)
        finally:
            _leave()
        box["ended"] = "ran out"
    except TaskInterrupted:
        box["ended"] = "interrupted"


def test_an_interrupted_node_leaves_its_processes_killed_and_their_pipes_closed() -> None:
    # The exception can land inside subprocess's own clean-up and skip the close of a pipe:
    # left to the garbage collector, it surfaced as a ResourceWarning in whatever ran then.
    box: dict[str, Any] = {}
    started = threading.Event()
    thread = threading.Thread(target=_node, args=(box, started, ["sleep", "30"]))
    thread.start()
    assert started.wait(10)
    assert thread.ident is not None and interrupts.interrupt(thread.ident)
    thread.join(10)
    assert box["ended"] == "interrupted"
    popen = box["popen"]
    assert popen.wait(5) == -9  # killed with its node
    assert popen.stdout.closed and popen.stderr.closed


def test_a_node_that_ends_keeps_the_pipes_of_what_it_started() -> None:
    interrupts.enter("d-interrupts", 2)
    try:
        popen = subprocess.Popen([sys.executable, "-c", "print('still mine')"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    finally:
        _leave()
    assert not popen.stdout.closed
    out, _ = popen.communicate(timeout=10)
    assert out.strip() == b"still mine"


def _cleans_up(box: dict[str, Any], started: threading.Event, cleaning: threading.Event,
               go_on: threading.Event) -> None:
    """User code whose ``finally`` takes a while (writes a file, closes a connection)."""
    try:
        interrupts.enter("d-interrupts", 3)
        try:
            try:
                started.set()
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    time.sleep(0.01)
            finally:
                cleaning.set()
                go_on.wait(10)  # the cancel reaches this worker again meanwhile
                for _ in range(100):
                    time.sleep(0.001)  # Python bytecode: a second exception would land here
                box["cleaned"] = True
        finally:
            _leave()
    except TaskInterrupted:
        box["ended"] = "interrupted"


def test_a_second_cancel_of_an_interrupted_node_does_not_cut_its_clean_up_short() -> None:
    box: dict[str, Any] = {}
    started, cleaning, go_on = threading.Event(), threading.Event(), threading.Event()
    thread = threading.Thread(target=_cleans_up, args=(box, started, cleaning, go_on))
    thread.start()
    assert started.wait(10)
    assert thread.ident is not None and interrupts.interrupt(thread.ident)
    assert cleaning.wait(10)
    assert not interrupts.interrupt(thread.ident)  # interrupted already: not again
    go_on.set()
    thread.join(10)
    assert box == {"cleaned": True, "ended": "interrupted"}
    assert not interrupts.interrupt(thread.ident)  # it left user code
