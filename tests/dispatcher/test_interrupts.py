"""A cancelled node's thread and processes (dispatcher/worker/interrupts.py), in this process:
what an interrupted node started is killed and its pipes closed; a node that ends keeps them."""

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
