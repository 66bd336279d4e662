"""`covalent start`/`stop` are never fooled: liveness from the data dir's lock (issue #10).

Every process is started here and stopped here by the PID we started (or the PID holding the
data dir's lock); none is looked up by name.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import covalent as ct
from covalent.config import client_config, read_config, update_config
from dispatcher.instance import LOCK_NAME, holder
from dispatcher.procinfo import alive
from tests.conftest import free_port
from tests.faults.conftest import REPO, Cli, ServerProcess
from tests.tasks import add

pytestmark = [pytest.mark.slow, pytest.mark.processes]


@ct.lattice
def _inc(x):
    return add(x, 1)


def _run(cli: Cli) -> int:
    return ct.get_result(ct.dispatch(_inc)(41), wait=True).result


@pytest.mark.all_stores  # each start opens the store and resumes from it
@pytest.mark.timeout(180)  # six starts of a whole cluster: a minute on a loaded machine
def test_kill9_then_start_restarts_every_time(cli: Cli, store_kind: str) -> None:
    port = free_port()
    # Six in a row on one port and one data dir (ten took 25-33 s of CI); PostgreSQL: its own
    # part, in less CI time.
    times = 6 if store_kind == "sqlite" else 3
    for i in range(times):
        out = cli("start", "--port", str(port), "--workers", "1")
        assert out.returncode == 0 and "started" in out.stdout, (i, out.stdout, out.stderr)
        pid = cli.server_pid()
        if i in (0, times - 1):
            assert _run(cli) == 42
        os.kill(pid, signal.SIGKILL)  # its parent is gone: it may linger as a zombie
        deadline = time.monotonic() + 10
        while holder(cli.data_dir) is not None:  # the kernel drops the lock with the process
            assert time.monotonic() < deadline
            time.sleep(0.02)


def test_a_pid_file_naming_an_unrelated_process_is_ignored(cli: Cli) -> None:
    bystander = subprocess.Popen(["sleep", "300"])
    try:
        cli.data_dir.mkdir(parents=True)
        for name in ("server.pid", LOCK_NAME):  # stale files naming a live, unrelated process
            (cli.data_dir / name).write_text(
                f'{{"pid": {bystander.pid}, "instance_id": "x", "url": "http://127.0.0.1:1", '
                f'"data_dir": "{cli.data_dir}"}}' if name == LOCK_NAME else str(bystander.pid))
        out = cli("stop", "--timeout", "3")
        assert "not running" in out.stdout
        out = cli("start", "--port", str(free_port()), "--workers", "1")
        assert out.returncode == 0 and "started" in out.stdout, out.stdout + out.stderr
        assert cli.server_pid() != bystander.pid
        out = cli("stop")
        assert out.returncode == 0 and "stopped" in out.stdout
        assert bystander.poll() is None  # never signalled
    finally:
        bystander.kill()
        bystander.wait()


def test_a_second_server_on_the_same_data_dir_refuses(cli: Cli) -> None:
    port = free_port()
    out = cli("start", "--port", str(port), "--workers", "1")
    assert out.returncode == 0, out.stderr
    first = cli.server_pid()
    other = subprocess.run([sys.executable, "-m", "dispatcher", "--port", str(free_port()),
                            "--data-dir", str(cli.data_dir), "--workers", "1"], env=cli.env,
                           cwd=REPO, capture_output=True, text=True, timeout=60)
    assert other.returncode == 4
    assert f"already running at http://127.0.0.1:{port} (pid {first})" in other.stderr
    assert str(cli.data_dir) in other.stderr
    out = cli("start", "--port", str(port))  # idempotent: what was asked for runs
    assert out.returncode == 0 and "already running" in out.stdout and str(cli.data_dir) in out.stdout
    # The config pointed elsewhere (a second dispatcher started and stopped since): the SDK and
    # `covalent status` follow the one start found running again (they said "not running").
    update_config("dispatcher", {"port": free_port()})
    out = cli("start")
    assert out.returncode == 0 and "already running" in out.stdout
    assert read_config()["dispatcher"]["port"] == port
    assert cli("status").returncode == 0
    elsewhere = free_port()  # asked for another port: said, not taken for done (it was exit 0)
    out = cli("start", "--port", str(elsewhere))
    assert out.returncode == 1 and f"already running at http://127.0.0.1:{port}" in out.stderr
    assert f"Not started again on port {elsewhere}" in out.stderr
    assert cli.server_pid() == first


def test_two_starts_at_once_run_one_server(cli: Cli) -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "dispatcher.cli", "start", "--port", str(port), "--workers", "1"]
    procs = [subprocess.Popen(cmd, env=cli.env, cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    said = sorted("started" if "started" in o else "already running" if "already running" in o
                  else o for o, _ in outs)
    assert said == ["already running", "started"], outs
    cli.server_pid()
    assert _run(cli) == 42


def test_start_on_a_port_held_by_another_dispatcher_or_socket(cli: Cli, tmp_path: Path,
                                                             server_env: dict[str, str]) -> None:
    other = ServerProcess(tmp_path / "other-data", server_env, workers=1)
    other.start()
    try:
        before = read_config()
        t = time.monotonic()
        out = cli("start", "--port", str(other.port), "--workers", "1")
        assert out.returncode != 0 and time.monotonic() - t < 30
        assert f"port {other.port} is in use by another process; try --port" in out.stderr
        assert "Traceback" not in out.stderr and read_config() == before  # config untouched
        assert holder(cli.data_dir) is None
    finally:
        other.stop()
    with socket.socket() as plain:
        plain.bind(("127.0.0.1", 0))
        plain.listen()
        port = plain.getsockname()[1]
        out = cli("start", "--port", str(port), "--workers", "1")
        assert out.returncode != 0
        assert out.stderr.strip().splitlines()[-1] == (
            f"Error: port {port} is in use by another process; try --port")


def test_an_unreachable_scheduler_fails_within_seconds(cli: Cli) -> None:
    with socket.socket() as silent:  # accepts connections, never speaks Dask
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"tcp://127.0.0.1:{silent.getsockname()[1]}"
        t = time.monotonic()
        out = cli("start", "--port", str(free_port()), "--scheduler-address", address)
        took = time.monotonic() - t
    assert out.returncode != 0 and took < 20, took
    assert f"cannot reach the Dask scheduler at {address}" in out.stderr


def _server(cli: Cli, *extra: str) -> subprocess.Popen[bytes]:
    log = open(cli.data_dir.parent / "fg.log", "ab")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([sys.executable, "-m", "dispatcher", "--port", str(free_port()),
                             "--data-dir", str(cli.data_dir), *extra], env=cli.env, cwd=REPO,
                            stdout=log, stderr=subprocess.PIPE)
    log.close()
    cli.started.append(proc.pid)
    return proc


def _children(pid: int) -> list[int]:
    from dispatcher.procinfo import children

    return children(pid)


@pytest.mark.parametrize("where", ["starting the LocalCluster", "reaching a silent scheduler"])
def test_sigterm_during_start_up_leaves_no_process(cli: Cli, where: str) -> None:
    extra = ["--workers", "2"]
    silent = None
    if where == "reaching a silent scheduler":
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        extra = ["--scheduler-address", f"tcp://127.0.0.1:{silent.getsockname()[1]}"]
    try:
        proc = _server(cli, *extra)
        deadline = time.monotonic() + 30
        while holder(cli.data_dir) is None:  # the lock is the first thing it takes
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.005)
        seen = set(_children(proc.pid))
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert b"stopped during start-up" in err and b"Traceback" not in err
        cli.started += list(seen)
        assert not [p for p in seen if Path(f"/proc/{p}").exists()
                    and Path(f"/proc/{p}/stat").read_text().split()[2] != "Z"]
        assert holder(cli.data_dir) is None
    finally:
        if silent is not None:
            silent.close()


def test_ctrl_c_in_the_foreground_exits_cleanly(cli: Cli) -> None:
    proc = _server(cli, "--workers", "1")
    deadline = time.monotonic() + 60
    while True:
        found = holder(cli.data_dir)
        if found is not None and _answers(found.url):
            break
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and b"Traceback" not in err and b"KeyboardInterrupt" not in err


def _answers(url: str) -> bool:
    from covalent import _client
    from covalent.config import ClientConfig
    from covalent.errors import CovalentError

    try:
        _client.request_json(ClientConfig(url, client_config().token), "GET", "/health", timeout=2)
        return True
    except CovalentError:
        return False


def test_version_and_dashboard_address(cli: Cli) -> None:
    out = cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"covalent, version {ct.__version__}"
    dash = free_port()
    out = cli("start", "--port", str(free_port()), "--workers", "1", "--dashboard-address",
              f"127.0.0.1:{dash}")
    assert out.returncode == 0, out.stderr
    assert f"Dask dashboard: http://127.0.0.1:{dash}/status" in out.stdout


def test_ctrl_c_while_start_waits_stops_the_dispatcher_it_was_starting(cli: Cli) -> None:
    starting = subprocess.Popen([sys.executable, "-m", "dispatcher.cli", "start", "--port",
                                 str(free_port()), "--workers", "1"], env=cli.env, cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                # as a terminal's job has it (a CI runner may ignore SIGINT,
                                # and an ignored signal is inherited)
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 30
        while holder(cli.data_dir) is None:  # the server process is up, starting its cluster
            assert time.monotonic() < deadline and starting.poll() is None
            time.sleep(0.02)
        server = cli.server_pid()
        starting.send_signal(signal.SIGINT)  # what Ctrl-C sends the terminal's foreground job
        out, err = starting.communicate(timeout=90)
    finally:
        if starting.poll() is None:
            starting.kill()
            starting.wait()
    assert starting.returncode == 130, out + err
    assert "stopped; nothing is left running" in err and "Aborted" not in err
    assert holder(cli.data_dir) is None and not alive(server)  # it came up anyway before
