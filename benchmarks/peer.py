"""Run the workloads through a real Covalent 0.240 install, as a ``peer`` column.

``--peer-covalent PYTHON`` names the python of a separate venv (see benchmarks/README.md for
the install command; Covalent is never a dependency of ours). ``running_peer()`` starts that
Covalent with its own ``covalent start`` on a free port, 2 workers x 1 thread, with an
isolated ``HOME`` (config, cache, data and its pid file live there) and no ``COVALENT_*``
variable of ours, then a ``peer_runner.py`` child under that python that runs one workload
per request. On exit it closes the runner, runs ``covalent stop`` with the same ``HOME`` and
SIGKILLs by PID anything of the recorded Covalent process tree still running.

Covalent takes about a second per dispatch and ~0.2 s per node here, so workloads over
``max_nodes`` nodes are skipped on this side (their rows say so).
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from .lifecycle import Recorded, kill_leftovers, record_descendants
from .measure import Side
from dispatcher.procinfo import children
from .server import free_port
from .workloads import Workload

RUNNER = Path(__file__).with_name("peer_runner.py")
START_TIMEOUT_S = 180
PID_FILE = Path(".cache", "covalent", "ui.pid")  # under HOME: the shell running its server


def _environment(python: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("COVALENT_", "XDG_", "PYTHON", "VIRTUAL_ENV"))}
    env["HOME"] = str(home)
    env["PATH"] = os.pathsep.join([str(Path(python).parent), env.get("PATH", "")])
    return env


def _covalent(python: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    cli = Path(python).parent / "covalent"
    return subprocess.run([str(cli), *args], env=env, cwd=env["HOME"], capture_output=True,
                          text=True, timeout=START_TIMEOUT_S, check=False)


def _request(runner: subprocess.Popen[str], log: Path, w: Workload) -> Any:
    stdin, stdout = runner.stdin, runner.stdout
    assert stdin is not None and stdout is not None
    stdin.write(w.name + "\n")
    stdin.flush()
    line = stdout.readline()
    if not line:
        raise RuntimeError(f"peer runner exited while running {w.name}:\n"
                           f"{log.read_text(errors='replace')[-3000:]}")
    answer = json.loads(line)
    if answer["status"] != "COMPLETED":
        raise RuntimeError(f"{w.name} on Covalent ended {answer['status']}: {answer['error']}")
    return pickle.loads(base64.b64decode(answer["result"]))


def _processes(home: Path) -> tuple[Recorded, tuple[int, ...], tuple[int, ...]]:
    """Covalent's process tree from its pid file: (all, server and cluster, Dask workers)."""
    shell = int((home / PID_FILE).read_text().strip())
    tree = record_descendants(shell)
    servers = [p for p in tree if p != shell and p in children(shell)]  # app.py
    cluster = [c for s in servers for c in children(s)]  # its LocalCluster process
    workers = [w for c in cluster for w in children(c)]
    return tree, (*servers, *cluster), tuple(workers)


@contextmanager
def running_peer(python: str, quick: bool, max_nodes: int) -> Iterator[Side]:
    """Start Covalent and its runner, yield the ``peer`` side, stop both on exit."""
    home = Path(tempfile.mkdtemp(prefix="covalent-peer-"))
    env, port = _environment(python, home), free_port()
    tree: Recorded = {}
    try:
        started = _covalent(python, env, "start", "-p", str(port), "-n", "2", "-t", "1")
        if started.returncode != 0:
            raise SystemExit(f"covalent start failed:\n{started.stdout[-2000:]}"
                             f"{started.stderr[-2000:]}")
        tree, servers, workers = _processes(home)
        log_path = home / "runner.log"
        with open(log_path, "w") as log:
            runner = subprocess.Popen([python, "-I", str(RUNNER), f"http://localhost:{port}",
                                       "1" if quick else "0"], env=env, cwd=home, text=True,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
            try:
                yield Side("peer", lambda w: _request(runner, log_path, w), servers, workers,
                           max_nodes)
            finally:
                _close(runner)
    finally:
        if not tree and (home / PID_FILE).exists():  # a start that failed half way
            tree = _processes(home)[0]
        _covalent(python, env, "stop")
        kill_leftovers(tree)
        shutil.rmtree(home, ignore_errors=True)


def _close(runner: subprocess.Popen[str]) -> None:
    stdin: IO[str] | None = runner.stdin
    if stdin is not None:
        stdin.close()  # the runner's cue to exit
    try:
        runner.wait(30)
    except subprocess.TimeoutExpired:
        runner.kill()
        runner.wait(30)
