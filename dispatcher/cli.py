"""The ``covalent`` command: start, stop, restart, status, logs, purge (and list, watch, cancel
from ``cli_dispatches``).

``covalent start`` runs ``python -m dispatcher`` as a daemon (its own session, output to
``<data dir>/server.log``) and succeeds only when that very process answers (its PID and
instance id in ``/health``). Liveness comes from the lock the server holds on its data dir
(see ``instance``), never from a PID file: ``stop`` signals only the process holding it.
The token is generated unless given, kept in the config file (0600), and handed to the server
in its environment, never on a command line.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
from click.core import ParameterSource

import covalent
from covalent import api
from covalent.config import (DEFAULT_PORT, BadVariable, ClientConfig, ConfigError, client_config,
                             config_path, read_config, update_config)
from covalent.errors import CovalentError, DispatcherUnavailableError, ServerNotYoursError

from .cli_db import db
from .cli_dispatches import COMMANDS, show_dispatch
from .cli_users import user
from .instance import EXIT_RUNNING, Instance, holder, pid_holds_lock
from .logfile import tail_lines
from .settings import SERVER_VARIABLES, default_data_dir


def _data_dir(value: str | None) -> Path:
    """--data-dir, else COVALENT_DATA_DIR, else the default; one line if it is a file."""
    path = Path(value) if value else default_data_dir()
    try:
        bad = path.exists() and not path.is_dir() or any(p.is_file() for p in path.parents)
    except OSError as exc:  # a folder above it this user may not enter
        raise click.ClickException(f"cannot use the data dir {path} ({exc.strerror}): "
                                   "--data-dir or COVALENT_DATA_DIR names another") from None
    if bad:
        raise click.ClickException(f"the data dir {path} is not a directory: --data-dir or "
                                   "COVALENT_DATA_DIR names another")
    return path


def _health(cfg: ClientConfig) -> dict[str, Any] | None:
    """``/health`` of the server at ``cfg``; None if none answers.

    Raises:
        ServerNotYoursError: another user's process answers there (it was sent nothing).
    """
    try:
        return dict(api.request_json(cfg, "GET", "/health", timeout=2))
    except ServerNotYoursError:
        raise
    except CovalentError:
        return None


def _running_message(found: Instance) -> str:
    return (f"Covalent dispatcher already running at {found.url} (pid {found.pid}, data dir "
            f"{found.data_dir}); `covalent status` tells more, `covalent stop` stops it.")


def _token(token: str | None, no_token: bool) -> str:
    """The token the server will require: given, else the saved one, else a new one."""
    if no_token:
        return ""
    return token or str(read_config().get("dispatcher", {}).get("token", "")) or secrets.token_urlsafe(32)


class _Commands(click.Group):
    """``covalent``: a config file that cannot be read is one line, for every command."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BadVariable as exc:
            raise click.ClickException(str(exc)) from None
        except ConfigError as exc:
            raise click.ClickException(f"{exc} (fix it, or remove it: `covalent start` writes "
                                       "a new one)") from None


@click.group(cls=_Commands)
@click.version_option(covalent.__version__, "-v", "--version", prog_name="covalent")
def main() -> None:
    """Manage the Covalent dispatcher (aiohttp server + Dask cluster + SQLite store)."""


@main.command()
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True,
              envvar="COVALENT_SERVER_PORT")
@click.option("--host", default="127.0.0.1", show_default=True, envvar="COVALENT_SERVER_HOST",
              help="Bind address; anything but loopback needs a token.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="LocalCluster workers (default: cores).")
@click.option("--threads-per-worker", type=click.IntRange(min=1), default=None)
@click.option("--mem-per-worker", default=None, help="Memory limit per worker, e.g. 2GB.")
@click.option("--scheduler-address", default=None,
              help="Use an existing Dask scheduler (tcp://host:8786) instead of a LocalCluster.")
@click.option("--dashboard-address", default=None,
              help="Where the Dask dashboard listens (default 127.0.0.1:8787).")
@click.option("--cluster", "cluster", default=None, metavar="IMPORT.PATH",
              help="Create this Dask cluster manager instead of a LocalCluster, e.g. "
                   "dask_jobqueue.SLURMCluster (config: [dask] cluster).")
@click.option("--cluster-kwargs", default=None, metavar="JSON",
              help="Keyword arguments of --cluster as a JSON object (config: [dask] cluster_kwargs).")
@click.option("--adapt", default=None, metavar="MIN:MAX",
              help="Scale the cluster between MIN and MAX workers with the load (config: [dask] adapt).")
@click.option("--no-worker-timeout", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Fail a task no worker can run (resources nobody has) after this long; 0: "
                   "wait forever (default 60 on the embedded cluster, else forever).")
@click.option("--time-limit-grace", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="How long a node past its time_limit may take to stop before its worker is "
                   "restarted (default 10).")
@click.option("--token", default=None, envvar="COVALENT_TOKEN", hidden=True,
              help="Only from COVALENT_TOKEN: on the command line `ps` shows it to everyone.")
@click.option("--token-file", default=None, type=click.Path(dir_okay=False, exists=True),
              help="Read the token requests must carry from this file (or set COVALENT_TOKEN; "
                   "default: the saved one, else a new one).")
@click.option("--no-token", is_flag=True,
              help="DANGEROUS: accept requests without a token; any local user can then run code as you.")
@click.option("--allow-host", multiple=True, help="Another name clients may use in the Host header.")
@click.option("--public-url", default=None, envvar="COVALENT_PUBLIC_URL", metavar="URL",
              help="How the cluster's workers reach this dispatcher, for sublattices (default: "
                   "--host and --port; replicas behind a load balancer: its URL).")
@click.option("--store-url", default=None, envvar="COVALENT_STORE_URL",
              help="Where workers write outputs: an fsspec URL (s3://bucket/prefix) or a shared "
                   "directory every worker and the server reach (default: the data dir).")
@click.option("--store-options", default=None, envvar="COVALENT_STORE_OPTIONS", metavar="JSON",
              help="fsspec storage options of --store-url (passed to the server in its "
                   "environment, never on its command line).")
@click.option("--data-dir", default=None, envvar="COVALENT_DATA_DIR", help="Store location.")
@click.option("--db-url", default=None, envvar="COVALENT_DB_URL",
              help="The database: postgresql://user@host:port/db (a password goes in "
                   "COVALENT_DB_URL or a pgpass file, never the command line) or "
                   "sqlite:///path (default: the config's [database] url, else SQLite in the "
                   "data dir).")
@click.option("--timeout", type=float, default=60.0, show_default=True,
              help="Seconds to wait for the server to answer.")
def start(port: int, host: str, workers: int | None, threads_per_worker: int | None,
          mem_per_worker: str | None, scheduler_address: str | None, dashboard_address: str | None,
          token: str | None, no_token: bool, allow_host: tuple[str, ...], data_dir: str | None,
          timeout: float, cluster: str | None = None, cluster_kwargs: str | None = None,
          adapt: str | None = None, time_limit_grace: float | None = None,
          no_worker_timeout: float | None = None, store_url: str | None = None,
          store_options: str | None = None, token_file: str | None = None,
          db_url: str | None = None, public_url: str | None = None) -> None:
    """Start the dispatcher as a daemon and wait until it answers."""
    ctx = click.get_current_context()
    if token is not None and ctx.get_parameter_source("token") == ParameterSource.COMMANDLINE:
        raise click.UsageError("a token on the command line is shown to every local user by "
                               "`ps`: put it in a file (--token-file FILE) or in COVALENT_TOKEN")
    _no_secrets_in_argv(ctx, db_url, store_options)
    if token_file is not None:
        token = Path(token_file).read_text().strip()
        if not token:
            raise click.UsageError(f"the token file {token_file} is empty")
    ddir = _data_dir(data_dir)
    found = holder(ddir)
    if found is not None:
        asked = ctx.get_parameter_source("port") in (ParameterSource.COMMANDLINE,
                                                     ParameterSource.ENVIRONMENT)
        if asked and urlsplit(found.url).port != port:  # what was asked for is not what runs
            raise click.ClickException(
                f"{_running_message(found)} Not started again on port {port}: one dispatcher "
                f"per data dir (`covalent restart --port {port}` moves it; --data-dir DIR starts "
                "another one)")
        click.echo(_running_message(found))
        running = urlsplit(found.url)
        if running.hostname and running.port:  # the SDK and the CLI follow it from here on
            try:
                update_config("dispatcher", {"address": running.hostname, "port": running.port})
            except (OSError, ValueError):
                pass
        return
    if ":" in host:
        raise click.BadParameter("an IPv6 address is not supported here; bind 127.0.0.1, "
                                 "0.0.0.0 or a host name", param_hint="--host")
    secret = _token(token, no_token)
    try:
        ddir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise click.ClickException(f"cannot create the data dir {ddir} ({exc.strerror}): "
                                   "--data-dir or COVALENT_DATA_DIR names another") from None
    cmd = [sys.executable, "-m", "dispatcher", "--port", str(port), "--host", host,
           "--data-dir", str(ddir)]
    for flag, value in (("--workers", workers), ("--threads-per-worker", threads_per_worker),
                        ("--mem-per-worker", mem_per_worker),
                        ("--scheduler-address", scheduler_address),
                        ("--dashboard-address", dashboard_address), ("--cluster", cluster),
                        ("--cluster-kwargs", cluster_kwargs), ("--adapt", adapt),
                        ("--time-limit-grace", time_limit_grace),
                        ("--no-worker-timeout", no_worker_timeout), ("--public-url", public_url)):
        if value is not None:
            cmd += [flag, str(value)]
    for name in allow_host:
        cmd += ["--allow-host", name]
    if no_token:
        cmd.append("--no-token")
    instance = uuid.uuid4().hex
    env = dict(os.environ, COVALENT_INSTANCE_ID=instance)
    for name, value in (("COVALENT_TOKEN", secret), ("COVALENT_STORE_URL", store_url),
                        ("COVALENT_STORE_OPTIONS", store_options), ("COVALENT_DB_URL", db_url)):
        env.pop(name, None)  # only what this start says (restart passes what was saved); a
        if value:  # password a database URL may hold stays out of `ps`
            env[name] = value
    log_path = ddir / "server.log"
    ddir.chmod(0o700)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.fchmod(fd, 0o600)  # a log written by an older version may be wider
    with os.fdopen(fd, "ab") as log:
        run_start = os.fstat(fd).st_size  # what this run writes comes after: its reasons only
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
    try:
        info = _await_own_server(proc, ClientConfig(url, secret), instance, log_path, timeout,
                                 run_start)
    except KeyboardInterrupt:  # it runs in a session of its own: Ctrl-C did not reach it
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave it up
        click.echo("interrupted: stopping the dispatcher it was starting...", err=True)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        click.echo("stopped; nothing is left running", err=True)
        sys.exit(130)
    if info is None:  # another `covalent start` won the data dir's lock meanwhile
        found = holder(ddir)
        click.echo(_running_message(found) if found else _failure_reason(log_path, 4, run_start))
        return
    try:
        # --no-token keeps the saved token: the next start without it needs that one again
        update_config("dispatcher", {"address": host, "port": port, "token": secret or
                                     read_config().get("dispatcher", {}).get("token")})
    except (OSError, ValueError) as exc:  # a read-only config dir: nobody could reach it
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        raise click.ClickException(
            f"the dispatcher started, but its address and token cannot be saved to "
            f"{config_path()} ({exc}), so nothing could reach it: stopped it again. "
            "COVALENT_CONFIG_DIR names another config dir") from None
    _save_options(ddir / "server.json", {
        "port": port, "host": host, "workers": workers, "threads_per_worker": threads_per_worker,
        "mem_per_worker": mem_per_worker, "scheduler_address": scheduler_address,
        "dashboard_address": dashboard_address, "allow_host": list(allow_host),
        "no_token": no_token, "data_dir": data_dir, "cluster": cluster,
        "cluster_kwargs": cluster_kwargs, "adapt": adapt, "time_limit_grace": time_limit_grace,
        "no_worker_timeout": no_worker_timeout, "store_url": store_url,
        "store_options": store_options, "db_url": db_url, "public_url": public_url,
        "env": {name: os.environ[name] for name in SERVER_VARIABLES if os.environ.get(name)}})
    found_cluster = info.get("cluster", {})
    click.echo(f"Covalent dispatcher started (pid {proc.pid}) at {url}")
    click.echo(f"Dask scheduler: {found_cluster.get('scheduler')} ({_cluster_kind(found_cluster)})"
               f"  workers: {found_cluster.get('workers')}")
    if found_cluster.get("dashboard"):
        click.echo(f"Dask dashboard: {found_cluster['dashboard']}")
    click.echo(f"Data: {ddir}   Logs: {log_path}")
    click.echo(f"Web UI: {_ui_link(ClientConfig(url, secret))}")
    if not secret:
        click.echo("WARNING: started with --no-token: any local user can run code as you.")


_SECRET_KEYS = ("secret", "password", "token", "passwd")


def _no_secrets_in_argv(ctx: click.Context, db_url: str | None, store_options: str | None) -> None:
    """A database password or a store's secret key typed on the command line is shown to every
    local user by ``ps`` for as long as ``covalent start`` waits: refused, saying where it goes."""
    def typed(name: str) -> bool:
        return ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE

    try:
        password = urlsplit(db_url).password if db_url else None
    except ValueError:
        password = None  # the server says what is wrong with the URL
    if password and typed("db_url"):
        raise click.UsageError(
            "a database password on the command line is shown to every local user by `ps`: put "
            "the URL in COVALENT_DB_URL or the config file's [database] url, or the password in "
            "~/.pgpass (PostgreSQL reads it)")
    if store_options and typed("store_options"):
        try:
            keys = _keys(json.loads(store_options))
        except ValueError:
            keys = []  # the server says what is wrong with it
        secret = [k for k in keys if k == "key" or any(w in k.lower() for w in _SECRET_KEYS)]
        if secret:
            raise click.UsageError(
                f"--store-options holds {', '.join(map(repr, secret))}: a secret on the command "
                "line is shown to every local user by `ps`; put the JSON in "
                "COVALENT_STORE_OPTIONS, or the credentials where fsspec finds them (for S3, "
                "~/.aws/credentials or AWS_* variables)")


def _keys(value: Any) -> list[str]:
    """Every key of a JSON value's objects, nested ones too (``client_kwargs``)."""
    if isinstance(value, dict):
        return [k for key, v in value.items() for k in [str(key), *_keys(v)]]
    if isinstance(value, list):
        return [k for v in value for k in _keys(v)]
    return []


def _save_options(path: Path, options: dict[str, Any]) -> None:
    """What ``covalent restart`` starts with; 0600 (store options may hold credentials)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(options, fh)


def _ui_link(cfg: ClientConfig) -> str:
    """The link that lets a browser in: it trades a ticket the server makes for the CLI for an
    HttpOnly cookie (issue #15). The token itself is never in it: a link opened while the
    dispatcher is stopped and another user's process holds its port gives that process a
    ticket that opens nothing."""
    if not cfg.token:
        return f"{cfg.url}/"
    try:
        made = api.request_json(cfg, "POST", "/ui/tickets", body=b"{}", timeout=10)
        return f"{cfg.url}{made['path']}"
    except (CovalentError, KeyError, TypeError) as exc:
        return f"{cfg.url}/ (no link made: {exc})"


def _await_own_server(proc: subprocess.Popen[bytes], cfg: ClientConfig, instance: str,
                      log_path: Path, timeout: float, run_start: int) -> dict[str, Any] | None:
    """Wait until ``proc`` itself answers (its /status); None if another server holds the data
    dir; exit non-zero with the one-line reason otherwise."""
    deadline = time.monotonic() + timeout
    squatter = ""  # another user's process answering at the address (sent nothing)
    while True:
        code = proc.poll()
        if code == EXIT_RUNNING:
            return None
        if code is not None:
            reason = _failure_reason(log_path, code, run_start)
            if squatter:
                reason += f" (user {squatter}'s process listens there)"
            raise click.ClickException(reason)
        try:
            health = _health(cfg)
        except ServerNotYoursError as exc:
            health, squatter = None, exc.owner
        if health is not None and health.get("instance") == instance and health.get("pid") == proc.pid:
            try:
                return dict(api.request_json(cfg, "GET", "/status", timeout=10))
            except CovalentError as exc:
                raise click.ClickException(f"the dispatcher answers but /status failed: {exc}") from None
        if time.monotonic() > deadline:
            proc.terminate()  # our own child, by the PID we started
            raise click.ClickException(f"the dispatcher did not answer at {cfg.url} within {timeout} s; "
                                       f"see {log_path}")
        time.sleep(0.1)  # waiting for another process to bind and answer: nothing is pushed


def _failure_reason(log_path: Path, code: int, run_start: int) -> str:
    """The one-line reason the server gave for exiting, from what this run wrote to the log."""
    lines = tail_lines(log_path, 200, since=run_start)
    reasons = [ln.removeprefix("covalent dispatcher: ") for ln in lines
               if ln.startswith("covalent dispatcher: ")]
    if reasons:
        return reasons[-1]
    return f"the dispatcher exited during start-up (code {code}):\n" + "\n".join(lines[-15:])


@main.command()
@click.option("--data-dir", default=None, envvar="COVALENT_DATA_DIR")
@click.option("--timeout", type=float, default=30.0, show_default=True)
def stop(data_dir: str | None, timeout: float) -> None:
    """Stop the dispatcher gracefully (running work is recorded and resumes on start)."""
    ddir = _data_dir(data_dir)
    found = holder(ddir)
    if found is None:
        click.echo("Covalent dispatcher is not running.")
        return
    os.kill(found.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_holds_lock(ddir, found.pid):
        if time.monotonic() > deadline:
            os.kill(found.pid, signal.SIGKILL)  # checked just above: it still holds the lock
            click.echo(f"Covalent dispatcher (pid {found.pid}) did not stop in {timeout} s; killed.")
            return
        time.sleep(0.05)  # waiting for another process to exit: nothing is pushed
    click.echo(f"Covalent dispatcher stopped (pid {found.pid}).")


@main.command()
@click.option("--data-dir", default=None, envvar="COVALENT_DATA_DIR")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Start on this port (default: the port of the last start).")
@click.pass_context
def restart(ctx: click.Context, data_dir: str | None, port: int | None) -> None:
    """Stop, then start again with the options of the last ``covalent start``."""
    ddir = _data_dir(data_dir)
    try:
        options = json.loads((ddir / "server.json").read_text())
    except (FileNotFoundError, ValueError):
        options = {}
    running = holder(ddir)
    if running is not None and port is not None and urlsplit(running.url).port != port:
        _refuse_busy_port(str(options.get("host") or "127.0.0.1"), port, running)
    ctx.invoke(stop, data_dir=data_dir)
    for name, value in (options.pop("env", None) or {}).items():  # COVALENT_WORKERS, ...
        if name in SERVER_VARIABLES and name not in os.environ:  # this shell's own win
            os.environ[name] = str(value)  # what the server is started with (start copies it)
    options["data_dir"] = options.get("data_dir") or data_dir
    options["allow_host"] = tuple(options.get("allow_host") or ())
    if port is not None:
        options["port"] = port
    elif "port" not in options and os.environ.get("COVALENT_SERVER_PORT"):
        options["port"] = int(os.environ["COVALENT_SERVER_PORT"])  # as start reads it
    try:
        ctx.invoke(start, **options)
    except click.ClickException as exc:
        if running is not None:
            raise click.ClickException(f"{exc.format_message()} (the dispatcher is stopped "
                                       "now: `covalent start` starts it)") from None
        raise


def _refuse_busy_port(host: str, port: int, running: Instance) -> None:
    """``restart --port`` onto a port another process listens on would stop the dispatcher
    and then fail to start it: refused while it still runs."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise click.ClickException(
                    f"port {port} is in use by another process: the dispatcher keeps running "
                    f"at {running.url}; choose another --port") from None


@main.command()
@click.argument("dispatch_id", required=False)
def status(dispatch_id: str | None) -> None:
    """Show the server, its Dask cluster and the running dispatches; with a DISPATCH_ID (or
    its first characters), that dispatch."""
    if dispatch_id:
        sys.exit(show_dispatch(dispatch_id))
    cfg = client_config()
    try:
        info = api.request_json(cfg, "GET", "/status", timeout=10)
    except DispatcherUnavailableError as exc:
        click.echo(f"Covalent dispatcher: not running at {cfg.url} ({exc.reason})")
        sys.exit(1)
    except CovalentError as exc:
        click.echo(f"Covalent dispatcher at {cfg.url} refused: {exc}")
        sys.exit(1)
    cluster = info.get("cluster", {})
    click.echo(f"Covalent dispatcher: running at {cfg.url}")
    click.echo(f"Dask scheduler: {cluster.get('scheduler')} ({_cluster_kind(cluster)}), workers: "
               f"{cluster.get('workers')}, threads: {cluster.get('threads')}")
    if cluster.get("dashboard"):
        click.echo(f"Dask dashboard: {cluster['dashboard']}")
    if cluster.get("callback"):
        click.echo(f"Workers reach the dispatcher at: {cluster['callback']} (sublattices; "
                   "--public-url)")
    for w in info.get("workers", []):
        click.echo(f"  worker {w['address']}  name {w['name']}  threads {w['threads']}  memory "
                   f"{_gib(w.get('memory_limit'))}  resources {_resources(w.get('resources'))}")
    click.echo("Executors: " + ", ".join(e["name"] for e in info.get("executors", [])))
    for e in info.get("executors", []):
        serving = f"{len(e['workers'])} worker{'s' if len(e['workers']) != 1 else ''}"
        ignored = f"  (ignored: {', '.join(e['ignored'])})" if e.get("ignored") else ""
        click.echo(f"  {e['name']}: {e['description']} -> {serving}{ignored}")
    for name, keys in (info.get("unmapped_executors") or {}).items():
        click.echo(f"  {name}: NOT MAPPED ([executors.{name}] sets only {', '.join(keys)})")
    click.echo(f"Web UI: {_ui_link(cfg)}")
    running = info.get("running", [])
    if info.get("replica"):  # another replica's are not in it (a load balancer picks one)
        click.echo(f"Running dispatches on this replica: {len(running)} (every replica's: "
                   "covalent list --status RUNNING)")
    else:
        click.echo(f"Running dispatches: {len(running)}")
    for d in running:
        click.echo(f"  {d}  {_done_total(cfg, d)}")
    triggers = info.get("triggers")
    if triggers is not None:
        click.echo(f"Active triggers: {len(triggers)}")
        for t in triggers:
            failing = f"; last error: {t['last_error']}" if t.get("last_error") else ""
            click.echo(f"  {t.get('name')} for {t.get('dispatch_id')} "
                       f"(fired {t.get('fire_count')} times{failing})")
    if info.get("store", {}).get("database"):
        click.echo(f"Database: {info['store']['database']}")
    if info.get("store", {}).get("write_error"):
        click.echo(f"Store write error: {info['store']['write_error']}")


def _cluster_kind(cluster: dict[str, Any]) -> str:
    """``embedded LocalCluster``, ``dask_jobqueue.SLURMCluster, adaptive 0..20``, ``external``."""
    manager = cluster.get("manager") or ""
    kind = ("embedded LocalCluster" if cluster.get("embedded") else manager) or "external"
    adapt = cluster.get("adapt")
    return f"{kind}, adaptive {adapt[0]}..{adapt[1]} workers" if adapt else kind


def _gib(value: Any) -> str:
    return f"{value / 2**30:.1f} GiB" if isinstance(value, int | float) and value else "no limit"


def _resources(value: Any) -> str:
    return ",".join(f"{k}={v:g}" for k, v in value.items()) if value else "-"


def _done_total(cfg: ClientConfig, dispatch_id: str) -> str:
    """``done/total electrons`` of a running dispatch, or ``""`` if it cannot be read."""
    try:
        body = api.request_json(cfg, "GET", f"/dispatches/{dispatch_id}/progress", timeout=10)
    except CovalentError:
        return ""
    electrons = body.get("electrons", [])
    done, total = sum(e["completed"] for e in electrons), sum(e["total"] for e in electrons)
    return f"{body.get('name', '')}  {done}/{total} electrons"


@main.command()
@click.option("-n", "--lines", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--data-dir", default=None, envvar="COVALENT_DATA_DIR")
def logs(lines: int, data_dir: str | None) -> None:
    """Print the end of the server log (from the rotated files too, when the log was rotated
    a few lines ago)."""
    path = _data_dir(data_dir) / "server.log"
    if not path.exists():
        click.echo(f"No log at {path}.")
        return
    found = tail_lines(path, lines)
    older = 1
    while len(found) < lines and (rotated := path.with_name(f"{path.name}.{older}")).exists():
        found = tail_lines(rotated, lines - len(found)) + found
        older += 1
    for line in found:
        click.echo(line)


@main.command()
@click.option("--older-than", default=None, metavar="AGE",
              help="Delete finished dispatches that ended before AGE ago (7d, 12h, 30m) or an ISO time.")
@click.option("--status", "statuses", multiple=True, type=click.Choice(["COMPLETED", "FAILED", "CANCELLED"]),
              help="Only dispatches that ended with this status (repeatable).")
@click.option("--all", "everything", is_flag=True,
              help="Stop the server and delete the whole data dir and the config file (token included).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--data-dir", default=None, envvar="COVALENT_DATA_DIR")
@click.pass_context
def purge(ctx: click.Context, older_than: str | None, statuses: tuple[str, ...], everything: bool,
          yes: bool, data_dir: str | None) -> None:
    """Delete finished dispatches (--older-than, --status: through the running server, their
    records and the blobs nothing else uses), or everything (--all: the server is stopped, the
    data dir and the config file deleted). Names what it will delete, then asks."""
    if older_than is not None and not older_than.strip():
        raise click.UsageError("--older-than needs an age such as 7d or 12h, or an ISO time")
    if everything and (older_than is not None or statuses):
        raise click.UsageError("--all deletes everything: give it alone, or --older-than AGE "
                               "and/or --status S without it")
    if everything == (older_than is not None or bool(statuses)):
        raise click.UsageError("say what to delete: --older-than AGE and/or --status S, or --all "
                               "(everything, the token included)")
    if not everything:
        _purge_dispatches(older_than, statuses, yes)
        return
    ddir = _data_dir(data_dir)
    if not yes:
        click.confirm(f"Stop the dispatcher and delete {ddir} (every dispatch, result and log) "
                      f"and {config_path()} (its token and settings)?", abort=True)
    ctx.invoke(stop, data_dir=data_dir)
    shutil.rmtree(ddir, ignore_errors=True)
    config_path().unlink(missing_ok=True)
    click.echo(f"Purged {ddir} and {config_path()}.")


def _purge_dispatches(older_than: str | None, statuses: tuple[str, ...], yes: bool) -> None:
    """Ask the server which dispatches match, name them, confirm, delete them."""
    cfg = client_config()
    query: dict[str, Any] = {"status": list(statuses)} if statuses else {}
    if older_than is not None:
        query["older_than"] = older_than
    try:
        found = api.request_json(cfg, "DELETE", "/dispatches", query={**query, "dry_run": 1})
        ids = found["dispatch_ids"]
        if not ids:
            click.echo("No finished dispatch matches.")
            return
        shown = ", ".join(ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
        click.echo(f"{len(ids)} finished dispatches match: {shown}")
        if not yes:
            click.confirm("Delete them, their results and the blobs nothing else uses?", abort=True)
        out = api.request_json(cfg, "DELETE", "/dispatches", query=query)
    except CovalentError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Deleted {out['deleted']} finished dispatches.")


for _command in (*COMMANDS, db, user):  # covalent list / watch / cancel / db / user
    main.add_command(_command)

if __name__ == "__main__":
    main()
