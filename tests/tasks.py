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


@ct.lattice
def two_node(x, y):
    return multiply(add(x, y), 2)


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
def shout_bytes(msg):
    """Writes bytes, as some libraries do (``sys.stdout.buffer``), a character split in two."""
    data = f"bytes:{msg}\n".encode()
    sys.stdout.buffer.write(data[:-2])
    sys.stdout.buffer.write(data[-2:])
    sys.stdout.buffer.flush()
    sys.stderr.buffer.write(b"bytes err\n")
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


@ct.electron
def mark(path, value):
    """Append this process's pid to ``path`` (one line per run) and return ``value``."""
    with open(path, "a") as fh:
        fh.write(f"{os.getpid()}\n")
    print("marked", value)
    return value


@ct.electron
def gate(x, started, release_file, timeout=60.0):
    """Record this worker's pid in ``started``, then wait until ``release_file`` exists.

    For process clusters, where a threading.Event cannot reach the worker.
    """
    import time
    from pathlib import Path

    Path(started).write_text(str(os.getpid()))
    deadline = time.monotonic() + timeout
    while not os.path.exists(release_file):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{release_file} never appeared")
        time.sleep(0.02)
    return x + 1


@ct.electron
def size_once_released(data, release_file, timeout=120.0):
    """The size of ``data``, once ``release_file`` exists."""
    import time

    deadline = time.monotonic() + timeout
    while not os.path.exists(release_file):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{release_file} never appeared")
        time.sleep(0.02)
    return len(data)


@ct.electron
def die(x):
    """Kill the worker process running it, every time."""
    import signal

    os.kill(os.getpid(), signal.SIGKILL)
    return x


@ct.electron
def hog(mib_per_step=50, steps=100, after=None):
    """Allocate memory step by step (touching every page) until the worker is killed;
    ``after`` only orders it after another node."""
    import time

    held = []
    for _ in range(steps):
        held.append(bytearray(os.urandom(1)) * (mib_per_step << 20))
        time.sleep(0.05)
    return len(held)


@ct.electron
def big_bytes(mib):
    return b"x" * (mib << 20)


@ct.electron
def noise(kib):
    """Incompressible, unique bytes (content-addressed storage cannot share them)."""
    return os.urandom(kib << 10)


@ct.electron
def chatter(kib):
    """Print ``kib`` KiB of unique text (kept in the node's record, not as an output)."""
    print(os.urandom(kib << 9).hex())
    return kib


def record_loader(path: str) -> object:
    """Write the PID of the process that unpickles this into ``path`` (who loads a pickle?)."""
    from pathlib import Path

    from covalent.triggers import BaseTrigger

    Path(path).write_text(str(os.getpid()))

    class Quiet(BaseTrigger):
        def observe(self) -> None:
            pass

        def stop(self) -> None:
            pass

    return Quiet()


class LoaderRecorder:
    """Pickles as a call to ``record_loader``: a stand-in for a crafted pickle."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (record_loader, (self.path,))


@ct.electron
def touch(path):
    """Create ``path``: proof that this electron ran."""
    with open(path, "w") as fh:
        fh.write("ran")
    return path


def _refuse_to_load(reason: str) -> object:
    raise ModuleNotFoundError(reason)


class LoadsNowhere:
    """Pickles fine on the worker; unpickling it fails (as a class whose module is missing)."""

    def __reduce__(self):
        return (_refuse_to_load, ("No module named 'only_on_the_workers'",))


@ct.electron
def unloadable(x):
    return LoadsNowhere()


@ct.electron
def print_surrogate(x):
    print("x \udc80 y")
    return x


@ct.electron
def fail_on_listing(directory):
    """Raise with a file name that is not UTF-8, as os.listdir returns it."""
    name = os.listdir(directory)[0]
    raise FileNotFoundError(f"cannot read {name}")


@ct.electron
def print_a_lot(mib):
    """Print ``mib`` MiB in numbered 64 KiB lines."""
    chunk = "y" * (64 << 10)
    for i in range(mib * 16):
        print(f"{i:08d}" + chunk)
    return mib


def _deeper(n):
    return _deeper(n + 1)


@ct.electron
def recurse_forever(x):
    return _deeper(x)


@ct.electron
def interrupt(x):
    raise KeyboardInterrupt("from an electron")


@ct.electron
def pause(x, seconds=0.05):
    import time

    time.sleep(seconds)
    return x


@ct.electron
def flaky(counter, failures):
    """Fail the first ``failures`` runs (counted in the file ``counter``), then return the run."""
    from pathlib import Path

    path = Path(counter)
    runs = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(runs))
    if runs <= failures:
        raise RuntimeError(f"run {runs} fails")
    return runs


@ct.electron
def busy_loop(marker):
    """Spin in pure Python forever (no sleep, no C call); record that it was stopped."""
    import pathlib

    n = 0
    try:
        while True:
            n += 1
    finally:
        pathlib.Path(marker).write_text("stopped")


@ct.electron
def c_sleep(seconds):
    """Block inside a C call (libc sleep through ctypes): no Python bytecode runs meanwhile."""
    import ctypes

    ctypes.CDLL(None).sleep(seconds)
    return seconds


@ct.electron
def where(i, *after):
    """(i, the Dask worker's name, this process's pid), after 0.2 s (so a fan-out spreads)."""
    import time

    from distributed import get_worker

    time.sleep(0.2)
    return i, str(get_worker().name), os.getpid()


@ct.electron
def log_run(path, name, *after):
    """Append ``name`` to ``path``: the order in which electrons ran."""
    with open(path, "a") as fh:
        fh.write(name + "\n")
    return name


@ct.electron
def slurm_job(i):
    """(i, host, $SLURM_JOB_ID): which SLURM job, if any, ran this electron."""
    import socket

    return i, socket.gethostname(), os.environ.get("SLURM_JOB_ID")


async def hold_event_loop(seconds: float, done_file: str) -> None:
    """Run by ``Client.run(..., wait=False)`` on a worker's event loop: hold it ``seconds`` (a
    worker stuck in a C call that keeps the GIL, as the scheduler sees it), then write
    ``done_file``."""
    import time
    from pathlib import Path

    time.sleep(seconds)
    Path(done_file).write_text("awake")


class Scaler:
    """A class whose method is an electron (Covalent allows it: the electron gets ``self``)."""

    def __init__(self, factor: int) -> None:
        self.factor = factor

    @ct.electron
    def scale(self, x: int) -> int:
        return self.factor * x


@ct.electron
def spawn_sleep(how, pidfile, seconds=3600):
    """Start ``sleep`` the way ``how`` says (never through ``subprocess`` but for
    "subprocess"), write its pid to ``pidfile``, and wait for it inside a C call."""
    import os
    import subprocess

    def note(pid):
        with open(pidfile + ".tmp", "w") as f:
            f.write(str(pid))
        os.replace(pidfile + ".tmp", pidfile)

    if how == "system":  # the shell notes its own pid, then becomes the sleep
        os.system(f"echo $$ > {pidfile}.tmp && mv {pidfile}.tmp {pidfile} && exec sleep {seconds}")
        return how
    if how == "posix_spawn":
        pid = os.posix_spawn("/bin/sleep", ["sleep", str(seconds)], dict(os.environ))
    elif how == "fork":
        pid = os.fork()
        if pid == 0:
            os.execv("/bin/sleep", ["sleep", str(seconds)])
    else:
        proc = subprocess.Popen(["sleep", str(seconds)])
        note(proc.pid)
        proc.wait()
        return how
    note(pid)
    os.waitpid(pid, 0)
    return how


@ct.electron
def sleep_in_subprocess(seconds, marker):
    """Note that it started, then wait for a ``sleep`` child (check=True: killed, it fails)."""
    import subprocess

    with open(marker, "a") as f:
        f.write(f"{os.getpid()}\n")
    subprocess.run(["sleep", str(seconds)], check=True)
    return seconds
