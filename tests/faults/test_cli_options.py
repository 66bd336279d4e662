"""What `covalent start` is given, from its options or its environment, holds for the whole
life of the data dir: `covalent restart` starts with it again (issue #21). Real processes.
"""

from __future__ import annotations

import json
import re
import os
import secrets
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest

import covalent as ct
from covalent.config import client_config
from dispatcher.app import create_app
from dispatcher.instance import holder
from tests.conftest import free_port, in_process_settings
from tests.faults.conftest import REPO, Cli
from tests.tasks import big_bytes

pytestmark = [pytest.mark.slow, pytest.mark.processes]


@ct.lattice
def _mib(n):
    return big_bytes(n)


def _blobs(root: Path) -> set[str]:
    return {p.name for p in root.rglob("*") if p.is_file() and p.stat().st_size > 1 << 20}


def test_restart_keeps_the_store_url_given_by_the_environment(cli: Cli, tmp_path: Path) -> None:
    shared = tmp_path / "shared-store"  # a directory every worker reaches (a shared file system)
    started = cli.__class__(dict(cli.env, COVALENT_STORE_URL=str(shared)), cli.data_dir)
    out = started("start", "--port", str(free_port()), "--workers", "1")
    assert out.returncode == 0, out.stdout + out.stderr
    cli.server_pid()
    first = ct.dispatch(_mib)(1)
    assert ct.get_result(first, wait=True).result == b"x" * (1 << 20)
    assert len(_blobs(shared)) == 1 and not _blobs(cli.data_dir)
    saved = cli.data_dir / "server.json"
    assert json.loads(saved.read_text())["store_url"] == str(shared)
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600

    out = cli("restart")  # another shell: no COVALENT_STORE_URL
    assert out.returncode == 0, out.stdout + out.stderr
    cli.server_pid()
    assert ct.get_result(first, wait=True).result == b"x" * (1 << 20)  # still found
    second = ct.dispatch(_mib)(2)
    assert ct.get_result(second, wait=True).result == b"x" * (2 << 20)
    assert len(_blobs(shared)) == 2 and not _blobs(cli.data_dir)
    moved = free_port()  # what `covalent start --port` says to run: it did not exist
    out = cli("restart", "--port", str(moved))
    assert out.returncode == 0 and f"127.0.0.1:{moved}" in out.stdout, out.stdout + out.stderr
    cli.server_pid()
    assert ct.get_result(second, wait=True).result == b"x" * (2 << 20)  # the SDK follows

    assert cli("stop").returncode == 0
    elsewhere = tmp_path / "other-store"
    out = cli("start", "--port", str(free_port()), "--workers", "1", "--store-url", str(elsewhere))
    assert out.returncode == 0, out.stdout + out.stderr
    cli.server_pid()
    assert ct.get_result(ct.dispatch(_mib)(3), wait=True).result == b"x" * (3 << 20)
    assert len(_blobs(elsewhere)) == 1


def test_restart_keeps_the_cluster_and_host_given_by_the_environment(cli: Cli) -> None:
    started = Cli(dict(cli.env, COVALENT_WORKERS="1", COVALENT_THREADS_PER_WORKER="1",
                       COVALENT_SERVER_HOST="localhost"), cli.data_dir)
    out = started("start", "--port", str(free_port()), "--dashboard-address", "127.0.0.1:0")
    assert out.returncode == 0 and "workers: 1" in out.stdout, out.stdout + out.stderr
    assert "started" in out.stdout and "at http://localhost:" in out.stdout, out.stdout
    cli.server_pid()

    out = cli("restart")  # another shell: none of those variables
    assert out.returncode == 0 and "workers: 1" in out.stdout, out.stdout + out.stderr
    assert "at http://localhost:" in out.stdout, out.stdout
    cli.server_pid()
    out = cli("status")
    assert "workers: 1, threads: 1" in out.stdout, out.stdout + out.stderr

    out = Cli(dict(cli.env, COVALENT_WORKERS="2"), cli.data_dir)("restart")  # this shell's win
    assert out.returncode == 0 and "workers: 2" in out.stdout, out.stdout + out.stderr
    cli.server_pid()
    assert "workers: 2, threads: 2" in cli("status").stdout


def test_restart_onto_a_busy_port_leaves_the_dispatcher_running(cli: Cli) -> None:
    out = cli("start", "--port", str(free_port()), "--workers", "1")
    assert out.returncode == 0, out.stdout + out.stderr
    pid = cli.server_pid()
    with socket.socket() as other:  # another process's server on the port asked for
        other.bind(("127.0.0.1", 0))
        other.listen()
        busy = other.getsockname()[1]
        out = cli("restart", "--port", str(busy))
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stdout + out.stderr
    assert f"port {busy} is in use" in out.stderr and "keeps running" in out.stderr, out.stderr
    assert cli.server_pid() == pid and "running at" in cli("status").stdout


def test_a_token_never_goes_on_a_command_line(cli: Cli, tmp_path: Path) -> None:
    token = secrets.token_urlsafe(32)
    out = cli("start", "--port", str(free_port()), "--workers", "1", "--token", token)
    assert out.returncode == 2 and "shown to every local user by `ps`" in out.stderr
    assert holder(cli.data_dir) is None and client_config().token != token

    secret_file = tmp_path / "token"
    secret_file.write_text(token + "\n")
    out = cli("start", "--port", str(free_port()), "--workers", "1", "--token-file", str(secret_file))
    assert out.returncode == 0, out.stdout + out.stderr
    for pid in [cli.server_pid(), *cli.started]:
        assert token not in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    assert client_config().token == token
    assert ct.get_result(ct.dispatch(_mib)(1), wait=True).status == "COMPLETED"


@pytest.mark.parametrize("option, value, said", [
    ("--db-url", "postgresql://me:s3cret@127.0.0.1:1/covalent", "a database password"),
    ("--store-options", '{"key": "AKIA", "secret": "s3cret"}', "holds 'key', 'secret'"),
    ("--store-options", '{"client_kwargs": {}, "aws_secret_access_key": "s3cret"}',
     "holds 'aws_secret_access_key'"),
    ("--store-options", '{"client_kwargs": {"aws_session_token": "t"}}',
     "holds 'aws_session_token'"),
])
def test_a_password_or_secret_key_never_goes_on_a_command_line(
        cli: Cli, option: str, value: str, said: str) -> None:
    # `ps` showed them to every local user for as long as `covalent start` waited.
    out = cli("start", "--port", str(free_port()), "--workers", "1", option, value)
    assert out.returncode == 2 and said in out.stderr and "`ps`" in out.stderr, out.stderr
    assert holder(cli.data_dir) is None


@pytest.mark.parametrize("token", ["x", "a" * 64, "correct-horse-battery-staple"])
def test_a_weak_token_cannot_guard_another_address(tmp_path: Path, token: str) -> None:
    out = subprocess.run([sys.executable, "-m", "dispatcher", "--host", "0.0.0.0", "--port", "0",
                          "--data-dir", str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                         timeout=30, env={"PATH": "", "PYTHONPATH": str(REPO),
                                          "COVALENT_CONFIG_DIR": str(tmp_path / "config"),
                                          "COVALENT_TOKEN": token})
    assert out.returncode == 2, out.stderr
    assert "refusing to bind 0.0.0.0: its token is worth about" in out.stderr
    strong = replace(in_process_settings(tmp_path), host="0.0.0.0", token=secrets.token_urlsafe(32))
    create_app(strong)  # what `covalent start` generates is enough


def test_a_bad_cluster_class_reports_its_own_error(cli: Cli) -> None:
    port = str(free_port())
    first = cli("start", "--port", port, "--cluster", "nosuch.Cluster")
    assert first.returncode == 1 and "cannot import nosuch" in first.stderr
    for path in ("collections.OrderedDict", "types.SimpleNamespace"):  # callable, not clusters
        out = cli("start", "--port", port, "--cluster", path)
        assert out.returncode == 1, out.stdout + out.stderr
        [line] = out.stderr.strip().splitlines()
        assert f"{path}(**{{}}) made a" in line and "not a Dask cluster manager" in line
        assert "nosuch" not in out.stderr  # never an earlier run's reason
    assert holder(cli.data_dir) is None


def _group(pgid: int) -> list[int]:
    """Live processes of process group ``pgid`` (zombies excluded)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if entry.name.isdigit() and int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def test_ctrl_c_to_the_whole_process_group_stops_everything_cleanly(cli: Cli) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "dispatcher", "--port", str(port), "--data-dir",
                             str(cli.data_dir), "--workers", "2"], env=cli.env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)  # a terminal's foreground group
    cli.started.append(proc.pid)
    try:
        deadline = time.monotonic() + 60
        while not (holder(cli.data_dir) and _answers(port)):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)  # another process is starting: nothing to wait on
        group = _group(proc.pid)
        cli.started += group
        assert len(group) >= 4  # the dispatcher, its scheduler process, two workers
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        out, _ = proc.communicate(timeout=20)  # it took 32 s (a scheduler it could not reach)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-3000:]
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-3000:]
    deadline = time.monotonic() + 15  # a worker of a loaded machine may take a moment to exit
    while _group(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)  # processes of another parent: nothing to wait on but /proc
    left = {p: Path(f"/proc/{p}/cmdline").read_bytes()[:200] for p in _group(proc.pid)}
    assert left == {}


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=2):
            return True
    except urllib.error.HTTPError as exc:
        return exc.code == 401  # it answers (the token is the config's)
    except OSError:
        return False


@pytest.mark.parametrize("args, said", [
    (["--host", "::1"], "IPv6"),  # started it, then crashed building its address: an orphan
    (["--port", "0"], "--port"),  # waited 60 s for port 0
    (["--port", "70000"], "--port"),  # a traceback
    (["--workers", "0"], "--workers"),  # ZeroDivisionError
    (["--time-limit-grace", "-3"], "--time-limit-grace"),  # accepted
])
def test_start_options_out_of_range_are_refused_before_anything_starts(
        cli: Cli, args: list[str], said: str) -> None:
    out = cli("start", *args, timeout=60)
    assert out.returncode == 2 and said in out.stderr and "Traceback" not in out.stderr, out.stderr
    from dispatcher.instance import holder

    assert holder(cli.data_dir) is None  # nothing runs


def test_a_malformed_config_file_is_one_line_for_every_command(cli: Cli, config_dir: Path) -> None:
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "covalent.conf").write_text("[dispatcher\nport = 1\n")
    for args in (["status"], ["list"], ["watch", "x"], ["start", "--port", str(free_port())],
                 ["user", "list"]):
        out = cli(*args, timeout=60)
        assert out.returncode != 0 and "Traceback" not in out.stderr, (args, out.stderr)
        assert "is not valid TOML" in out.stderr, (args, out.stderr)


def test_a_data_dir_that_is_a_file_or_cannot_be_made_is_one_line(cli: Cli, tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    for args in (["start", "--data-dir", str(afile)], ["stop", "--data-dir", str(afile)],
                 ["restart", "--data-dir", str(afile)],
                 ["purge", "--all", "--yes", "--data-dir", str(afile)],
                 ["start", "--data-dir", str(afile / "sub")]):
        out = cli(*args, "--port", str(free_port())) if args[0] == "start" else cli(*args)
        assert out.returncode == 1 and "Traceback" not in out.stderr, (args, out.stderr)
        assert "is not a directory: --data-dir or COVALENT_DATA_DIR" in out.stderr, (args, out.stderr)
    assert afile.read_text() == "not a directory"  # purge --all left it alone
    out = cli("start", "--data-dir", "/proc/no-such-dir", "--port", str(free_port()))
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert "cannot create the data dir /proc/no-such-dir" in out.stderr, out.stderr


@pytest.mark.parametrize("port", ['"abc"', "99999"])
def test_a_config_with_a_bad_port_is_one_line(cli: Cli, config_dir: Path, port: str) -> None:
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "covalent.conf").write_text(f"[dispatcher]\nport = {port}\n")
    for args in (["status"], ["list"]):
        out = cli(*args, timeout=60)
        assert out.returncode == 1 and "Traceback" not in out.stderr, (args, out.stderr)
        assert f"port = {port.replace(chr(34), chr(39))} is no address" in out.stderr, out.stderr


@pytest.mark.parametrize("addr", ["localhost:notaport", "http://", "127.0.0.1:99999"])
def test_a_bad_dispatcher_address_variable_is_one_line(cli: Cli, addr: str) -> None:
    """A typo in COVALENT_DISPATCHER_ADDR: the CLI says which variable, in one line (it was
    a traceback; ``http://`` was taken for a host named http), and so does the SDK."""
    said = f"COVALENT_DISPATCHER_ADDR={addr!r} is no address"
    for args in (["status"], ["list"]):
        out = subprocess.run([sys.executable, "-m", "dispatcher.cli", *args], text=True,
                             capture_output=True, timeout=60, cwd=REPO,
                             env=dict(cli.env, COVALENT_DISPATCHER_ADDR=addr))
        assert out.returncode == 1 and "Traceback" not in out.stderr, (args, out.stderr)
        assert out.stderr.strip() == f"Error: {said}: 'host:port' or 'http://host:port'"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("COVALENT_DISPATCHER_ADDR", addr)
        with pytest.raises(ValueError, match=re.escape(said)):
            ct.get_result("00000000-0000-4000-8000-000000000000")


def test_a_start_with_no_token_keeps_the_saved_token(cli: Cli, config_dir: Path) -> None:
    port = str(free_port())
    assert cli("start", "--port", port, "--workers", "1").returncode == 0
    cli.server_pid()
    saved = client_config().token
    assert saved and cli("stop").returncode == 0
    out = cli("start", "--port", port, "--workers", "1", "--no-token")
    assert out.returncode == 0 and "WARNING: started with --no-token" in out.stdout, out.stderr
    cli.server_pid()
    assert cli("stop").returncode == 0
    assert client_config().token == saved  # what the next start requires again


@pytest.mark.parametrize("args, code, said", [
    (["start", "--mem-per-worker", "lots"], 1,
     "--mem-per-worker (COVALENT_MEM_PER_WORKER) takes a size such as 2GB"),
    (["start", "--dashboard-address", "nonsense"], 1,
     "--dashboard-address takes HOST:PORT or :PORT (0: any free port), got 'nonsense'"),
    (["start", "--host", "0.0.0.0", "--no-token"], 1, "needs a token (leave out --no-token"),
    (["purge", "--all", "--older-than", "1d"], 2, "--all deletes everything: give it alone"),
    (["watch", ""], 4, "no dispatch id given"),
    (["cancel", " "], 1, "no dispatch id given"),
])
def test_a_wrong_option_is_named_in_one_line(cli: Cli, args: list[str], code: int,
                                             said: str) -> None:
    if args[0] == "start":
        args = [*args, "--port", str(free_port()), "--workers", "1"]
    out = cli(*args, timeout=60)
    assert out.returncode == code and "Traceback" not in out.stderr, out.stdout + out.stderr
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("Error: ")]
    assert len(errors) == 1 and said in errors[0], out.stderr  # (a usage error adds usage)
    assert holder(cli.data_dir) is None  # nothing runs
