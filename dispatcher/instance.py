"""Know whether a dispatcher runs on a data dir from a lock, never from a PID file.

The server holds an exclusive ``flock`` on ``<data dir>/server.lock`` for its whole life and
writes who it is into that file (PID, a random instance id, address). The kernel drops the lock
when the process dies, whatever killed it, so a lock that is held names a live server; a
zombie, a stale file or a recycled PID never looks like one. A second server on the same data
dir cannot take the lock and refuses to start, so two servers never resume the same dispatch.

``holder(data_dir)`` tells ``covalent start/stop/status`` who holds the lock: the file's
content, checked against the kernel's list of lock holders (``/proc/locks``) where there is one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

LOCK_NAME = "server.lock"

# Exit codes of ``python -m dispatcher`` that ``covalent start`` tells apart.
EXIT_BAD_SETTINGS, EXIT_PORT_IN_USE, EXIT_RUNNING, EXIT_CLUSTER, EXIT_STORE = 2, 3, 4, 5, 6


@dataclass(frozen=True, slots=True)
class Instance:
    """Who holds the lock: written by the server right after it takes it."""

    pid: int
    instance_id: str
    url: str
    data_dir: str


class AlreadyRunning(RuntimeError):
    """Another server holds the data dir's lock."""

    def __init__(self, data_dir: Path, other: Instance | None) -> None:
        super().__init__(data_dir, other)
        self.data_dir = data_dir
        self.other = other

    def __str__(self) -> str:
        who = f" at {self.other.url} (pid {self.other.pid})" if self.other else ""
        return f"a Covalent dispatcher is already running{who} on data dir {self.data_dir}"


class DataDirLock:
    """The exclusive lock a server holds on its data dir."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self, attempts: int = 20) -> None:
        """Take the lock or raise AlreadyRunning.

        A few quick attempts: ``holder()`` probes the lock for a microsecond, which must not
        make a starting server believe another one runs.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        for attempt in range(attempts):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._fd = fd
                return
            except BlockingIOError:
                if attempt + 1 < attempts:
                    time.sleep(0.025)  # another process holds it; nothing to wait on but time
        os.close(fd)
        raise AlreadyRunning(self.path.parent, _read(self.path))

    def adopt(self, fd: int | None) -> bool:
        """Take the lock held by ``fd``, handed over by this process's previous image
        (``hand_over``); False (and ``fd`` closed) when it is not this data dir's lock."""
        if fd is None:
            return False
        try:
            held, here = os.fstat(fd), os.stat(self.path)
            if (held.st_dev, held.st_ino) != (here.st_dev, here.st_ino):
                raise OSError("another file")
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held already by this description
        except OSError:
            with contextlib.suppress(OSError):
                os.close(fd)
            return False
        self._fd = fd
        return True

    def hand_over(self) -> int:
        """The lock's file descriptor, kept locked (with who holds it) for ``adopt``."""
        assert self._fd is not None, "hand_over needs the lock"
        fd, self._fd = self._fd, None
        return fd

    def publish(self, instance: Instance) -> None:
        """Write who holds the lock into the lock file."""
        assert self._fd is not None, "publish needs the lock"
        data = json.dumps(asdict(instance)).encode()
        if os.pread(self._fd, len(data) + 1, 0) == data:
            return  # the same (a relaunch keeps it): a reader never finds it empty meanwhile
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def holder(data_dir: Path) -> Instance | None:
    """The server holding ``data_dir``'s lock, or None when no live process holds it."""
    path = data_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # held: by a live server
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        pids = _kernel_holders(os.fstat(fd))
    finally:
        os.close(fd)
    info = _read(path)
    if info is None:
        return None
    if pids is not None and info.pid not in pids:
        return None  # the file names someone else: trust the kernel, not the file
    return info


def _read(path: Path) -> Instance | None:
    try:
        raw = json.loads(path.read_bytes() or b"null")
        return Instance(int(raw["pid"]), str(raw["instance_id"]), str(raw["url"]),
                        str(raw["data_dir"]))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _kernel_holders(st: os.stat_result) -> set[int] | None:
    """PIDs holding a flock on the file ``st`` describes, from /proc/locks; None off Linux."""
    try:
        text = Path("/proc/locks").read_text()
    except OSError:
        return None
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids = set()
    for line in text.splitlines():
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 4242 00:2e:1234 0 EOF" (blocked waiters have a "->" field)
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[2] != "->":
            if fields[5] == inode:
                pids.add(int(fields[4]))
    return pids


def pid_holds_lock(data_dir: Path, pid: int) -> bool:
    """True if ``pid`` is the live holder of ``data_dir``'s lock (checked right before a signal)."""
    found = holder(data_dir)
    return found is not None and found.pid == pid
