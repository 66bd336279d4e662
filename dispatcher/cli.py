"""The ``covalent`` command: start, stop, restart, status, logs, purge.

``covalent start`` runs ``python -m dispatcher`` as a daemon (its own session, output to
``<data dir>/server.log``, PID in ``<data dir>/server.pid``), waits until it answers, and writes
the address to the config file so the SDK finds it. ``stop`` signals that PID only.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click

from covalent._config import config_path, read_config

from .settings import default_data_dir


def _data_dir(value: str | None) -> Path:
    return Path(value) if value else default_data_dir()


def _pid(data_dir: Path) -> int | None:
    try:
        pid = int((data_dir / "server.pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        (data_dir / "server.pid").unlink(missing_ok=True)
        return None
    except PermissionError:
        pass
    return pid


def _url(host: str, port: int) -> str:
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"


def _get(url: str, path: str, token: str = "", timeout: float = 5.0) -> dict[str, Any]:
    req = urllib.request.Request(url + "/api/v1" + path)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return dict(json.loads(resp.read()))


def _write_config(host: str, port: int, token: str) -> None:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    section = {"address": host, "port": port}
    if token:
        section["token"] = token
    other = {k: v for k, v in read_config().items() if k != "dispatcher"}
    lines = []
    for name, table in [("dispatcher", section), *other.items()]:
        if not isinstance(table, dict):
            continue
        lines.append(f"[{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in table.items()]
        lines.append("")
    path.write_text("\n".join(lines))


def _server_address() -> tuple[str, int, str]:
    section = read_config().get("dispatcher", {})
    return (str(section.get("address", "127.0.0.1")), int(section.get("port", 48008)),
            os.environ.get("COVALENT_TOKEN") or str(section.get("token", "")))


@click.group()
def main() -> None:
    """Manage the Covalent dispatcher (aiohttp server + Dask cluster + SQLite store)."""


@main.command()
@click.option("--port", type=int, default=48008, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Bind address; anything but loopback needs --token.")
@click.option("--workers", type=int, default=None, help="LocalCluster workers (default: cores).")
@click.option("--threads-per-worker", type=int, default=None)
@click.option("--mem-per-worker", default=None, help="Memory limit per worker, e.g. 2GB.")
@click.option("--scheduler-address", default=None,
              help="Use an existing Dask scheduler (tcp://host:8786) instead of a LocalCluster.")
@click.option("--token", default=None, envvar="COVALENT_TOKEN", help="Token requests must carry.")
@click.option("--data-dir", default=None, envvar="COVALENT_DATA_DIR", help="Store location.")
@click.option("--timeout", type=float, default=60.0, show_default=True,
              help="Seconds to wait for the server to answer.")
def start(port: int, host: str, workers: int | None, threads_per_worker: int | None,
          mem_per_worker: str | None, scheduler_address: str | None, token: str | None,
          data_dir: str | None, timeout: float) -> None:
    """Start the dispatcher as a daemon and wait until it answers."""
    ddir = _data_dir(data_dir)
    if (pid := _pid(ddir)) is not None:
        click.echo(f"Covalent dispatcher already running (pid {pid}); `covalent status` tells more.")
        return
    ddir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "dispatcher", "--port", str(port), "--host", host,
           "--data-dir", str(ddir)]
    for flag, value in (("--workers", workers), ("--threads-per-worker", threads_per_worker),
                        ("--mem-per-worker", mem_per_worker),
                        ("--scheduler-address", scheduler_address), ("--token", token)):
        if value is not None:
            cmd += [flag, str(value)]
    log_path = ddir / "server.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    url = _url(host, port)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").splitlines()[-15:]
            raise click.ClickException("the dispatcher exited during start-up:\n" + "\n".join(tail))
        try:
            info = _get(url, "/status", token or "")
            break
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if time.monotonic() > deadline:
                os.kill(proc.pid, signal.SIGTERM)
                raise click.ClickException(f"the dispatcher did not answer at {url} within {timeout} s; see {log_path}") from None
            time.sleep(0.1)  # waiting for another process to bind: nothing to be pushed from
    _write_config(host, port, token or "")
    (ddir / "server.json").write_text(json.dumps({
        "port": port, "host": host, "workers": workers, "threads_per_worker": threads_per_worker,
        "mem_per_worker": mem_per_worker, "scheduler_address": scheduler_address,
        "data_dir": data_dir}))
    cluster = info.get("cluster", {})
    click.echo(f"Covalent dispatcher started (pid {proc.pid}) at {url}")
    click.echo(f"Dask scheduler: {cluster.get('scheduler')}  workers: {cluster.get('workers')}")
    if cluster.get("dashboard"):
        click.echo(f"Dask dashboard: {cluster['dashboard']}")
    click.echo(f"Data: {ddir}   Logs: {log_path}")


@main.command()
@click.option("--data-dir", default=None, envvar="COVALENT_DATA_DIR")
@click.option("--timeout", type=float, default=30.0, show_default=True)
def stop(data_dir: str | None, timeout: float) -> None:
    """Stop the dispatcher gracefully (running work is recorded and resumes on start)."""
    ddir = _data_dir(data_dir)
    pid = _pid(ddir)
    if pid is None:
        click.echo("Covalent dispatcher is not running.")
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid(ddir) == pid and _alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            click.echo(f"Covalent dispatcher (pid {pid}) did not stop in {timeout} s; killed.")
            (ddir / "server.pid").unlink(missing_ok=True)
            return
        time.sleep(0.05)  # waiting for another process to exit
    click.echo(f"Covalent dispatcher stopped (pid {pid}).")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@main.command()
@click.option("--data-dir", default=None, envvar="COVALENT_DATA_DIR")
@click.pass_context
def restart(ctx: click.Context, data_dir: str | None) -> None:
    """Stop, then start again with the options of the last ``covalent start``."""
    ddir = _data_dir(data_dir)
    try:
        options = json.loads((ddir / "server.json").read_text())
    except (FileNotFoundError, ValueError):
        options = {}
    _, _, token = _server_address()
    ctx.invoke(stop, data_dir=data_dir)
    options["data_dir"] = options.get("data_dir") or data_dir
    ctx.invoke(start, token=token or None, **options)


@main.command()
def status() -> None:
    """Show the server, its Dask cluster and the running dispatches."""
    host, port, token = _server_address()
    url = _url(host, port)
    try:
        info = _get(url, "/status", token)
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        click.echo(f"Covalent dispatcher: not running at {url} ({exc})")
        sys.exit(1)
    cluster = info.get("cluster", {})
    click.echo(f"Covalent dispatcher: running at {url}")
    click.echo(f"Dask scheduler: {cluster.get('scheduler')} ({'embedded LocalCluster' if cluster.get('embedded') else 'external'})"
               f", workers: {cluster.get('workers')}, threads: {cluster.get('threads')}")
    if cluster.get("dashboard"):
        click.echo(f"Dask dashboard: {cluster['dashboard']}")
    running = info.get("running", [])
    click.echo(f"Running dispatches: {len(running)}")
    for d in running:
        click.echo(f"  {d}")
    triggers = info.get("triggers")
    if triggers is not None:
        click.echo(f"Active triggers: {len(triggers)}")
        for t in triggers:
            click.echo(f"  {t.get('name')} for {t.get('dispatch_id')} (fired {t.get('fire_count')} times)")
    if info.get("store", {}).get("write_error"):
        click.echo(f"Store write error: {info['store']['write_error']}")


@main.command()
@click.option("-n", "--lines", type=int, default=50, show_default=True)
@click.option("--data-dir", default=None, envvar="COVALENT_DATA_DIR")
def logs(lines: int, data_dir: str | None) -> None:
    """Print the end of the server log."""
    path = _data_dir(data_dir) / "server.log"
    if not path.exists():
        click.echo(f"No log at {path}.")
        return
    for line in path.read_text(errors="replace").splitlines()[-lines:]:
        click.echo(line)


@main.command()
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--data-dir", default=None, envvar="COVALENT_DATA_DIR")
@click.pass_context
def purge(ctx: click.Context, yes: bool, data_dir: str | None) -> None:
    """Stop the server and delete every stored dispatch, result, log and the config file."""
    ddir = _data_dir(data_dir)
    if not yes:
        click.confirm(f"Delete {ddir} and {config_path()}?", abort=True)
    ctx.invoke(stop, data_dir=data_dir)
    shutil.rmtree(ddir, ignore_errors=True)
    config_path().unlink(missing_ok=True)
    click.echo(f"Purged {ddir} and {config_path()}.")


if __name__ == "__main__":
    main()
