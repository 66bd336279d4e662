"""Restarting the dispatcher in place when it loses its Dask cluster.

The embedded cluster's scheduler runs in a process of its own (``scheduler_process``). If that
process dies (killed, out of memory), Dask's client gives up reconnecting after 30 s and closes,
and nothing more can run: every new dispatch would fail and every running one would stay
RUNNING. The same holds when an external scheduler (``--scheduler-address``) goes away for
longer than the client waits for it. The dispatcher then restarts itself, as ``covalent
restart`` would: it stops (outcomes recorded, triggers saved), and executes its own command
line again in the same process (the same PID, so ``covalent stop`` still finds it); the new
start makes a new cluster (or reaches the external one again) and resumes the running
dispatches from the store, as after any restart. An external scheduler is given
``RELAUNCH_CONNECT_S`` to come back; a start that cannot reach it fails and says why (the log).

The data dir's lock and the listening socket are handed over to the new image (inherited file
descriptors, named in ``FDS_ENV``): ``covalent stop`` finds the same PID all along, and a client
that connects meanwhile waits in the socket's backlog instead of being refused.

At most ``MAX_RELAUNCHES`` in ``WINDOW_S``: a cluster that keeps dying stops the dispatcher
instead of restarting it for good.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

log = logging.getLogger("covalent.dispatcher")

MAX_RELAUNCHES = 3
WINDOW_S = 600.0
RELAUNCH_CONNECT_S = 300.0  # how long a relaunched server waits for an external scheduler
ENV = "COVALENT_RELAUNCHED_AT"  # the wall-clock times of this server's earlier relaunches
FDS_ENV = "COVALENT_RELAUNCH_FDS"  # what the previous image handed over: "lock=5,socket=7"


@dataclass
class Relaunch:
    """Whether this server is to start again when it stops, and why."""

    reason: str = ""
    stop: Callable[[], None] | None = field(default=None, repr=False)  # ends ``serve``
    stopping: bool = False  # asked to stop (SIGTERM, Ctrl-C): then it does not start again
    lost: bool = False  # the cluster was lost (whether or not it starts again)

    def request(self, reason: str) -> None:
        """Stop the server, to start it again (the first reason given is kept)."""
        self.lost = True
        if self.reason or self.stopping:
            return
        self.reason = reason
        log.error("%s: restarting the dispatcher (running dispatches resume)", reason)
        if self.stop is not None:
            self.stop()


def recent(now: float | None = None) -> list[float]:
    """The times of this server's relaunches within ``WINDOW_S``."""
    now = time.time() if now is None else now
    times = []
    for part in os.environ.get(ENV, "").split(","):
        try:
            t = float(part)
        except ValueError:
            continue
        if now - t < WINDOW_S:
            times.append(t)
    return times


def execute_again(**fds: int) -> None:
    """Replace this process by a new start of the same command line (never returns), which
    inherits ``fds`` (taken there by ``take_over``)."""
    os.environ[ENV] = ",".join(str(t) for t in [*recent(), time.time()])
    for fd in fds.values():
        os.set_inheritable(fd, True)
    os.environ[FDS_ENV] = ",".join(f"{name}={fd}" for name, fd in fds.items())
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, sys.orig_argv)


def take_over() -> dict[str, int]:
    """The file descriptors the previous image of this process handed over (once: the variable
    is removed, so the cluster's processes never see it), no longer inherited by children."""
    fds = {}
    for part in os.environ.pop(FDS_ENV, "").split(","):
        name, _, value = part.partition("=")
        try:
            fd = int(value)
            os.set_inheritable(fd, False)
        except (ValueError, OSError):
            continue  # not a number, or not open: nothing to take
        fds[name] = fd
    return fds


RELAUNCH = web.AppKey("relaunch", Relaunch)
