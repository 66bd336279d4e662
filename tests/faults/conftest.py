"""Dispatcher processes for fault injection: started, killed and stopped by PID in the tests."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from covalent import wire
from dispatcher.procinfo import alive, children
from dispatcher.unix_comm import sweep
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]


class ServerProcess:
    """``python -m dispatcher`` on a fixed port and data dir, restartable after a kill."""

    def __init__(self, data_dir: Path, env: dict[str, str], workers: int = 2,
                 extra: list[str] | None = None) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.token = secrets.token_urlsafe(16)  # tests send it with COVALENT_TOKEN
        self.env = dict(env, COVALENT_TOKEN=self.token)
        self.workers = workers
        self.extra = extra or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.spawned: list[int] = []  # every worker PID this server started
        self.log = data_dir.parent / f"server-{self.port}.log"

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.addr}"

    def status(self) -> dict[str, Any] | None:
        req = urllib.request.Request(self.url + "/api/v1/status",
                                     headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return dict(json.loads(resp.read()))
        except OSError:
            return None

    def post_dispatch(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        """POST a framed dispatch as it is: (status, headers, body), errors included."""
        req = urllib.request.Request(
            self.url + "/api/v1/dispatches", data=body, method="POST",
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": wire.CONTENT_TYPE})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def get(self, path: str) -> int:
        """The status of ``GET /api/v1<path>``."""
        req = urllib.request.Request(self.url + "/api/v1" + path,
                                     headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def start(self, timeout: float = 60.0, preexec: Any = None) -> None:
        """Start it and wait until its workers are up. A first start whose port another
        process took meanwhile (``free_port`` only finds one free at that moment) tries a new
        port, twice at most; a restart keeps its port (clients hold its address)."""
        first, retries = self.proc is None, 2
        self._launch(preexec)
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            info = self.status()
            if info is not None and info["cluster"].get("workers") == self.workers:
                break
            if self.proc.poll() is not None:
                taken = self.proc.returncode == 3 and "is in use" in self.log.read_text()[-3000:]
                if first and taken and retries:
                    retries -= 1
                    self.port = free_port()
                    self._launch(preexec)
                    continue
                raise AssertionError(f"dispatcher exited with {self.proc.returncode}: "
                                     + self.log.read_text()[-3000:])
            if time.monotonic() > deadline:
                raise AssertionError("dispatcher did not come up:\n" + self.log.read_text()[-3000:])
            time.sleep(0.1)  # another process is starting; nothing to wait on but its port
        self.spawned += children(self.proc.pid)

    def _launch(self, preexec: Any) -> None:
        cmd = [sys.executable, "-m", "dispatcher", "--port", str(self.port), "--data-dir",
               str(self.data_dir), "--workers", str(self.workers), "--threads-per-worker", "1",
               "--dashboard-address", ":0", *self.extra]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=log, cwd=REPO,
                                         preexec_fn=preexec)

    def worker_pids(self) -> list[int]:
        assert self.proc is not None
        pids = [p for p in children(self.proc.pid) if "spawn_main" in _cmdline(p)
                and "resource_tracker" not in _cmdline(p)]
        self.spawned += pids
        return pids

    def kill9(self) -> None:
        assert self.proc is not None
        self.spawned += children(self.proc.pid)
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._reap()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (what `covalent stop` sends); returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.spawned += children(self.proc.pid)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._reap()
        return self.proc.returncode

    def _reap(self, timeout: float = 15.0) -> None:
        """Workers leave when their parent dies; kill any that did not, by PID."""
        deadline = time.monotonic() + timeout
        while any(alive(p) for p in self.spawned) and time.monotonic() < deadline:
            time.sleep(0.1)  # waiting for other processes to notice their parent is gone
        for p in self.spawned:
            if alive(p):
                os.kill(p, signal.SIGKILL)
        forget_sockets(self.data_dir)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@dataclass(frozen=True)
class Shared:
    """Where the session's shared dispatcher is, and the environment that reaches it."""

    server: ServerProcess
    env: dict[str, str]  # for subprocesses and kernels: the SDK finds the server from it


def process_env(config_dir: Path) -> dict[str, str]:
    """This environment, with the repository importable and the SDK's config in ``config_dir``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["COVALENT_CONFIG_DIR"] = str(config_dir)
    return env


@pytest.fixture
def server_env(tmp_path: Path, config_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["COVALENT_CONFIG_DIR"] = str(config_dir)
    env.pop("COVALENT_TOKEN", None)
    return env


@pytest.fixture
def server(tmp_path: Path, server_env: dict[str, str],
           monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerProcess]:
    """A dispatcher process with 2 worker processes; stopped (by PID) at teardown."""
    s = ServerProcess(tmp_path / "data", server_env)
    monkeypatch.setenv("COVALENT_TOKEN", s.token)  # what the SDK sends
    yield s
    if s.proc is not None:
        s.stop()


class Cli:
    """Runs ``covalent ...`` in a subprocess on its own data and config dirs.

    Teardown stops whatever server still holds the data dir's lock (``covalent stop``, then
    SIGKILL to the lock holder) and any process the tests registered in ``started``.
    """

    def __init__(self, env: dict[str, str], data_dir: Path) -> None:
        self.env = env
        self.data_dir = data_dir
        self.started: list[int] = []  # PIDs of servers and workers to reap at teardown

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "dispatcher.cli", *args], env=self.env,
                              text=True, capture_output=True, timeout=timeout, check=False, cwd=REPO)

    def server_pid(self) -> int:
        from dispatcher.instance import holder

        found = holder(self.data_dir)
        assert found is not None, "no server holds the data dir's lock"
        self.started += [found.pid, *children(found.pid)]
        return found.pid

    def stop_server(self, timeout: float = 20.0) -> None:
        """Teardown: ``covalent stop`` whatever server holds the data dir, SIGKILL it if it
        still does, then reap every registered process."""
        from dispatcher.instance import holder

        if holder(self.data_dir) is not None:
            self.server_pid()
            self("stop", "--timeout", str(int(timeout)))
        found = holder(self.data_dir)
        if found is not None:
            os.kill(found.pid, signal.SIGKILL)
        self.reap()

    def reap(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while any(alive(p) for p in self.started) and time.monotonic() < deadline:
            time.sleep(0.1)  # waiting for other processes to notice their parent is gone
        for p in self.started:
            if alive(p):
                os.kill(p, signal.SIGKILL)
        forget_sockets(self.data_dir)


def forget_sockets(data_dir: Path) -> None:
    """Remove the socket directories a killed server of ``data_dir`` left, in the system's
    temporary directory too (a test's data dir is too long a path for sockets), which the next
    start's sweep would only take once they are old."""
    if (data_dir / "run").is_dir():
        sweep(data_dir / "run", stale_s=0)


@pytest.fixture
def cli(tmp_path: Path, server_env: dict[str, str]) -> Iterator[Cli]:
    env = dict(server_env, COVALENT_DATA_DIR=str(tmp_path / "data"))
    c = Cli(env, tmp_path / "data")
    yield c
    c.stop_server()
