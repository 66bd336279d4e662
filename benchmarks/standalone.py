"""Run raw Dask's reference cluster in a process of its own, shaped like the dispatcher's.

    python -m benchmarks.standalone [WORKERS THREADS [TLS_DIR]]

starts ``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)`` on loopback (the
dispatcher's embedded cluster has the same shape and memory limit), prints one JSON line
``{"scheduler": "tcp://..."}`` and serves until its stdin closes (the parent exits or closes
it). ``standalone_cluster()`` is the parent side: it starts that process, connects a client
and stops it by PID on exit. Raw Dask timed here pays nothing for sharing a process with the
dispatcher, which is what a Dask user without our dispatcher would run.

With ``TLS_DIR`` the same cluster talks TLS, with fresh credentials as the dispatcher makes
them (``Security.temporary()``, written 0600 to ``TLS_DIR`` for the parent's client): the
``raw_tls`` side, which shows what TLS costs raw Dask itself (issue #23).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import distributed

from .lifecycle import Recorded, record_children, stop_process
from .server import REPO, is_worker, scheduler_client


@dataclass(frozen=True)
class Standalone:
    """The standalone cluster's process (scheduler and nannies) and its scheduler address."""

    pid: int
    address: str
    worker_pids: tuple[int, ...]


def serve(workers: int, threads: int, tls_dir: str | None = None) -> None:
    """Child side: run the cluster until stdin closes."""
    tls: dict[str, Any] = {}
    if tls_dir:
        security = distributed.Security.temporary()  # type: ignore[no-untyped-call]
        for name, attr in (("ca.pem", "tls_ca_file"), ("cert.pem", "tls_client_cert"),
                           ("key.pem", "tls_client_key")):
            path = Path(tls_dir, name)
            path.touch(mode=0o600)
            path.write_text(getattr(security, attr))
        tls = {"security": security, "protocol": "tls"}
    with distributed.LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True,
                                  host="127.0.0.1", dashboard_address="127.0.0.1:0",
                                  memory_limit="auto", **tls) as cluster:
        print(json.dumps({"scheduler": cluster.scheduler_address}), flush=True)
        sys.stdin.read()


def _read_address(stream: IO[bytes], timeout: float) -> str | None:
    """The address line the child prints, or None if it exits or stays silent too long."""
    line: list[bytes] = []
    reader = threading.Thread(target=lambda: line.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not line or not line[0]:
        return None
    return str(json.loads(line[0])["scheduler"])


@contextmanager
def standalone_cluster(workers: int = 2, threads: int = 1, tls: bool = False
                       ) -> Iterator[tuple[Standalone, distributed.Client]]:
    """Start the standalone cluster (talking TLS if ``tls``), yield it with a connected
    client, stop it on exit."""
    with tempfile.TemporaryFile() as log, tempfile.TemporaryDirectory() as tls_dir:
        cmd = [sys.executable, "-m", "benchmarks.standalone", str(workers), str(threads)]
        proc = subprocess.Popen(cmd + ([tls_dir] if tls else []), cwd=REPO,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
        recorded: Recorded = {}
        try:
            assert proc.stdout is not None
            address = _read_address(proc.stdout, timeout=90)
            if address is None:
                log.seek(0)
                tail = log.read().decode(errors="replace")[-3000:]
                raise SystemExit(f"the standalone cluster did not start:\n{tail}")
            client = scheduler_client(address, Path(tls_dir), tls_dir="")
            try:
                client.wait_for_workers(workers, timeout=60)
                recorded = record_children(proc.pid)
                workers = tuple(p for p in recorded if is_worker(p))
                yield Standalone(proc.pid, address, workers), client
            finally:
                client.close()
        finally:
            if proc.stdin is not None:
                proc.stdin.close()  # the child's cue to shut its cluster down
            stop_process(proc, recorded, grace=30)


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]] or [2, 1]
    serve(*args, *sys.argv[3:4])
