"""Start our dispatcher in a subprocess for the benchmarks, and reach its Dask scheduler.

``running_dispatcher()`` starts ``python -m dispatcher`` on a free loopback port with a
temporary data dir and an embedded LocalCluster of 2 workers x 1 thread, always with an
explicit token: the child gets it as ``COVALENT_TOKEN``, and so does this process (the SDK
sends it), with ``COVALENT_CONFIG_DIR`` pointing both at an empty temporary dir so no user
config leaks in. Raw HTTP calls here send ``Authorization: Bearer <token>``.

On exit it stops the dispatcher and any worker it leaves behind by PID (``lifecycle.py``),
restores this process's environment and deletes the temp dir.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import distributed

from .lifecycle import Recorded, record_children, stop_process

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Dispatcher:
    """A running dispatcher: ``addr`` is what ``dispatcher_addr=`` takes."""

    process: subprocess.Popen[bytes]
    addr: str
    token: str
    data_dir: Path
    worker_pids: tuple[int, ...] = ()  # its Dask worker processes once the cluster is up
    helper_pids: tuple[int, ...] = ()  # its other children: the scheduler process above all

    @property
    def server_pids(self) -> tuple[int, ...]:
        """The dispatcher and the processes serving it (the Dask scheduler's among them)."""
        return (self.pid, *self.helper_pids)

    @property
    def pid(self) -> int:
        return self.process.pid

    def status(self) -> dict[str, Any] | None:
        """``GET /api/v1/status`` with the token; None while it does not answer."""
        req = urllib.request.Request(f"http://{self.addr}/api/v1/status", headers={
            "Authorization": f"Bearer {self.token}", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return dict(json.loads(r.read()))
        except OSError:
            return None

    def scheduler_address(self) -> str:
        """The Dask scheduler's address, as the dispatcher reports it."""
        info = self.status()
        if info is None:
            raise SystemExit("the dispatcher stopped answering")
        return str(info["cluster"]["scheduler"])


def is_worker(pid: int) -> bool:
    """A Dask worker process (a nanny's child), by its command line."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"spawn_main" in cmdline


def scheduler_client(address: str, data_dir: Path, tls_dir: str = "tls") -> distributed.Client:
    """A plain Dask client on the dispatcher's own scheduler.

    A ``tls://`` scheduler is reached with the credentials the dispatcher writes to
    ``<data_dir>/tls/{ca,cert,key}.pem``; a ``unix://`` (the default) or ``tcp://`` one plainly.
    """
    if not address.startswith("tls://"):
        return distributed.Client(address, set_as_default=False)
    tls = data_dir / tls_dir
    security = distributed.Security(
        tls_ca_file=str(tls / "ca.pem"), tls_client_cert=str(tls / "cert.pem"),
        tls_client_key=str(tls / "key.pem"), require_encryption=True)
    return distributed.Client(address, security=security, set_as_default=False)


@contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Set variables in this process's environment for the block, then restore them."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def running_dispatcher(workers: int = 2, threads: int = 1, db_url: str = "") -> Iterator[Dispatcher]:
    """Start the dispatcher (on ``db_url``, else its SQLite file), wait until its cluster has
    ``workers`` workers, stop it on exit."""
    tmp = Path(tempfile.mkdtemp(prefix="covalent-bench-"))
    token, port = secrets.token_urlsafe(24), free_port()
    env = {"COVALENT_TOKEN": token, "COVALENT_CONFIG_DIR": str(tmp / "config"),
           "COVALENT_DB_URL": db_url}
    cmd = [sys.executable, "-m", "dispatcher", "--port", str(port), "--data-dir", str(tmp / "data"),
           "--workers", str(workers), "--threads-per-worker", str(threads),
           "--dashboard-address", ":0"]
    try:
        with _environment(**env), open(tmp / "dispatcher.log", "wb") as log:
            proc = subprocess.Popen(cmd, env=dict(os.environ), cwd=REPO,
                                    stdout=subprocess.DEVNULL, stderr=log)
            d = Dispatcher(proc, f"127.0.0.1:{port}", token, tmp / "data")
            recorded: Recorded = {}
            try:
                _wait_ready(d, workers, tmp / "dispatcher.log")
                recorded = record_children(proc.pid)
                workers = tuple(p for p in recorded if is_worker(p))
                yield replace(d, worker_pids=workers,
                              helper_pids=tuple(p for p in recorded if p not in workers))
            finally:
                stop_process(proc, recorded)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _wait_ready(d: Dispatcher, workers: int, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while (info := d.status()) is None or info["cluster"].get("workers") != workers:
        if d.process.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:]
            raise SystemExit(f"the dispatcher did not start; its log ends with:\n{tail}")
        time.sleep(0.1)  # waiting for another process to come up: nothing to be notified by

