"""The embedded cluster's Dask scheduler in a process of its own.

The dispatcher's event loop then serves HTTP, records outcomes and compiles graphs while
another process (on another core) runs the scheduler's transitions: a 100,000-task graph
is taken in, and its tasks' completions handled, without the dispatcher pausing. The
scheduler listens where the embedded cluster's workers do (a Unix socket in their directory, or
TLS with the cluster's credentials) and leaves as soon as the dispatcher
that started it is gone (kill -9 included), so it never outlives it.

``SchedulerProcess`` is the ``SpecCluster`` scheduler spec; ``python -m
dispatcher.scheduler_process`` is what it runs.

Its memory stays flat under load (issue #21). Two things grew with every dispatch, for good
(together several MiB a minute under a steady stream of dispatches): Dask's scheduler keeps a
*span* (with every task group of the computation) for each stretch of work between idle
moments, forever, and ``dask.utils.key_split`` caches the prefix of every task key it has
seen (up to 100,000 keys). Every ``PRUNE_EVERY_S``, ``forget_history`` drops finished spans
beyond the newest ``SPANS_KEPT`` and empties that cache.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import dask
from dask.utils import key_split
from distributed import Scheduler, Security
from distributed.deploy.spec import ProcessInterface

from . import unix_comm  # noqa: F401  (registers unix://)

START_TIMEOUT_S = 30.0
SPANS_KEPT = 100  # finished spans (Dask's per-computation metrics) kept for the dashboard
PRUNE_EVERY_S = 10.0


def tls_files(tls_dir: Path) -> Security:
    """The embedded cluster's credentials as files (one certificate for every role)."""
    ca, cert, key = (str(tls_dir / n) for n in ("ca.pem", "cert.pem", "key.pem"))
    return Security(  # type: ignore[no-untyped-call]
        tls_ca_file=ca, tls_scheduler_cert=cert, tls_scheduler_key=key, tls_worker_cert=cert,
        tls_worker_key=key, tls_client_cert=cert, tls_client_key=key, require_encryption=True)


class SchedulerProcess(ProcessInterface):
    """Start ``python -m dispatcher.scheduler_process``; its address once it listens."""

    def __init__(self, *, host: str, run_dir: str, protocol: str | None = None,
                 tls_dir: str | None = None, dashboard_address: str | None = None,
                 no_workers_timeout: float | str | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.host, self.run_dir, self.tls_dir = host, Path(run_dir), tls_dir
        self.protocol = protocol
        self.dashboard_address = dashboard_address
        self.no_workers_timeout = no_workers_timeout
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        identity = self.run_dir / f"scheduler-{uuid.uuid4().hex}.json"
        log_path = self.run_dir / "scheduler.log"
        cmd = [sys.executable, "-m", "dispatcher.scheduler_process", "--identity", str(identity),
               "--host", self.host, "--parent", str(os.getpid())]
        if self.protocol:
            cmd += ["--protocol", self.protocol]
        if self.tls_dir:
            cmd += ["--tls-dir", self.tls_dir]
        if self.dashboard_address:
            cmd += ["--dashboard-address", self.dashboard_address]
        if self.no_workers_timeout is not None:
            cmd += ["--no-workers-timeout", str(self.no_workers_timeout)]
        with open(log_path, "ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT_S
        try:
            while not identity.exists():
                if self.proc.returncode is not None:
                    raise RuntimeError(f"the Dask scheduler process exited with "
                                       f"{self.proc.returncode}: {_tail(log_path)}")
                if asyncio.get_running_loop().time() > deadline:
                    raise RuntimeError(f"the Dask scheduler process did not start within "
                                       f"{START_TIMEOUT_S:.0f} s: {_tail(log_path)}")
                await asyncio.sleep(0.05)  # another process is starting: nothing to wait on
            self.address = json.loads(identity.read_text())["address"]
        except BaseException:
            await self.close()
            raise
        finally:
            identity.unlink(missing_ok=True)
        await super().start()  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await super().close()  # type: ignore[no-untyped-call]


def _tail(path: Path, n: int = 2000) -> str:
    """The reason in the scheduler's log: a traceback's last line, else the log's end."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if any(ln.startswith("Traceback (most recent call last)") for ln in lines):
        return f"{lines[-1]} (see {path})"
    return text[-n:].strip() or "(no output)"


async def _serve(ns: argparse.Namespace) -> None:
    if ns.no_workers_timeout is not None:  # a task no worker can run fails after this long
        dask.config.set({"distributed.scheduler.no-workers-timeout": ns.no_workers_timeout})
    security = tls_files(Path(ns.tls_dir)) if ns.tls_dir else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    # Ctrl-C reaches every process of the terminal's group: the dispatcher stops this one
    # (SIGTERM) once it no longer needs it, after its workers (issue #21: otherwise the
    # dispatcher spent 30 s reaching a scheduler that was gone, and exited 5).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    kwargs: dict[str, Any] = {"host": ns.host, "port": 0, "security": security,
                              "protocol": ns.protocol or ("tls" if security else "tcp"),
                              "dashboard": ns.dashboard_address is not None,
                              "dashboard_address": ns.dashboard_address or "127.0.0.1:0"}
    async with Scheduler(**kwargs) as scheduler:
        tmp = Path(ns.identity + ".tmp")
        tmp.write_text(json.dumps({"address": scheduler.address, "pid": os.getpid()}))
        os.replace(tmp, ns.identity)  # whole, or not there
        pruned = loop.time()
        while not stop.is_set() and os.getppid() == ns.parent:  # the dispatcher is still there
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except TimeoutError:
                pass
            if loop.time() - pruned > PRUNE_EVERY_S:
                forget_history(scheduler)
                pruned = loop.time()


def forget_history(scheduler: Scheduler) -> None:
    """What the scheduler keeps of past work, bounded (see the module doc)."""
    prune_spans(scheduler)
    key_split.cache_clear()  # a cache: recomputed for the keys still in use


def prune_spans(scheduler: Scheduler, keep: int = SPANS_KEPT) -> int:
    """Forget the finished span trees beyond the newest ``keep`` (none whose task groups the
    scheduler still has); how many spans went. Uses Dask's span extension as it stands
    (``distributed.spans``); does nothing if that changes shape."""
    ext = scheduler.extensions.get("spans")
    roots = getattr(ext, "root_spans", None)
    if ext is None or roots is None or len(roots) <= keep:
        return 0
    live = {id(tg) for tg in scheduler.task_groups.values()}
    old = [root for root in roots[:-keep]
           if root.done and not any(id(tg) in live for tg in root.traverse_groups())]
    gone = {span for root in old for span in root.traverse_spans()}
    if not gone:
        return 0
    ext.root_spans = [root for root in roots if root not in gone]
    for span in gone:
        ext.spans.pop(span.id, None)
    for index in (ext.spans_search_by_name, ext.spans_search_by_tag):
        for name in list(index):
            index[name] = [span for span in index[name] if span not in gone]
            if not index[name]:
                del index[name]
    return len(gone)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m dispatcher.scheduler_process")
    p.add_argument("--identity", required=True, help="file to write the address to")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--parent", type=int, required=True, help="leave when this PID is gone")
    p.add_argument("--protocol", default=None, choices=("unix", "tls", "tcp"),
                   help="unix: --host is the directory of the cluster's sockets")
    p.add_argument("--tls-dir", default=None)
    p.add_argument("--dashboard-address", default=None)
    p.add_argument("--no-workers-timeout", default=None)
    asyncio.run(_serve(p.parse_args(argv)))


if __name__ == "__main__":
    main()
