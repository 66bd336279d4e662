"""Functions that tests run as electrons; importable by worker processes (PYTHONPATH=repo)."""

from __future__ import annotations

import os
import sys
import threading

import covalent as ct

# Released by the autouse fixture in conftest at teardown so no test leaves a thread blocked.
release = threading.Event()


@ct.electron
def add(x, y):
    return x + y


@ct.electron
def multiply(x, y):
    return x * y


@ct.electron
def identity(x):
    return x


@ct.electron
def fail(x):
    raise ValueError(f"bad value {x}")


@ct.electron
def shout(msg):
    print(f"out:{msg}")
    print(f"err:{msg}", file=sys.stderr)
    return msg


@ct.electron
def block(x, timeout=30.0):
    """Wait until the test releases it (in-process clusters only)."""
    release.wait(timeout)
    return x


@ct.electron
def worker_pid(i):
    import time

    time.sleep(0.2)  # long enough that the scheduler spreads the fan-out over both workers
    return os.getpid()


@ct.electron
def spin(marker):
    """Loop in Python until interrupted; record that it stopped."""
    import pathlib
    import time

    try:
        while True:
            time.sleep(0.01)
    finally:
        pathlib.Path(marker).write_text("stopped")
