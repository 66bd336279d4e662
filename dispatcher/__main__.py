"""Run the dispatcher in the foreground: ``python -m dispatcher [--port N] ...``.

Arguments override ``COVALENT_*`` variables (see ``Settings.from_env``). ``covalent start``
runs this module as a daemon. The token never appears on a command line: it comes from
``COVALENT_TOKEN``, ``--token-file``, the config file, or is generated and saved there (0600).

Start-up, in this order, each step failing with one line on stderr and its own exit code:
lock the data dir (4: already running), bind the port (3: in use), open the store (6: database
unreachable, in use by another dispatcher, or written by a newer version) and reach the Dask
cluster (5: scheduler unreachable within 10 s), answer requests, then resume
unfinished dispatches in the background. SIGTERM or Ctrl-C at any point stops it cleanly.
"""

from __future__ import annotations

import argparse
import gc
import asyncio
import contextlib
import errno
import logging
import os
import secrets
import signal
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any, NoReturn

import dask
from aiohttp import web

from covalent.config import DEFAULT_PORT, config_path, read_config, update_config

from .connections import GATE, LimitedSite, OncePerKind, connection_limit, raise_fd_limit
from . import logfile
from .app import create_app
from .errors import StoreError
from .instance import (EXIT_BAD_SETTINGS, EXIT_CLUSTER, EXIT_PORT_IN_USE, EXIT_RUNNING,
                       EXIT_STORE, AlreadyRunning, DataDirLock, Instance)
from .loopwatch import LoopWatch
from .relaunch import MAX_RELAUNCHES, RELAUNCH, execute_again, recent as relaunches, take_over
from .settings import Settings, json_object, parse_adapt, parse_public_url
from .worker.quiet import USER_UMASK

log = logging.getLogger("covalent.dispatcher")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m dispatcher", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--data-dir", default=None, help="store location (default: user data dir)")
    p.add_argument("--workers", type=int, default=None, help="LocalCluster workers")
    p.add_argument("--threads-per-worker", type=int, default=None)
    p.add_argument("--mem-per-worker", default=None, help="e.g. 2GB (default: auto)")
    p.add_argument("--scheduler-address", default=None,
                   help="use this Dask scheduler instead of starting a LocalCluster")
    p.add_argument("--token-file", default=None,
                   help="read the token from this file (else COVALENT_TOKEN, else the config file)")
    p.add_argument("--no-token", action="store_true",
                   help="accept requests without a token (any local user can then run code as you)")
    p.add_argument("--allow-host", action="append", default=None, metavar="NAME",
                   help="another name clients may use in the Host header (repeatable)")
    p.add_argument("--dashboard-address", default=None, help="default 127.0.0.1:8787")
    p.add_argument("--public-url", default=None, metavar="URL",
                   help="how the workers reach this server, for sublattices (default: its own "
                        "address; replicas: the load balancer's URL)")
    p.add_argument("--store-url", default=None,
                   help="where workers write outputs: an fsspec URL every worker and this server "
                        "reach (default: the data dir, for workers on this machine)")
    p.add_argument("--store-options", default=None, metavar="JSON",
                   help="fsspec storage options for --store-url, e.g. an S3 endpoint_url")
    p.add_argument("--db-url", default=None, metavar="URL",
                   help="the database: postgresql://user@host:port/db (a password goes in "
                        "COVALENT_DB_URL, the config's [database] url or a pgpass file, not on "
                        "a command line), or sqlite:///path (default: SQLite in the data dir)")
    p.add_argument("--scheduler-process", action=argparse.BooleanOptionalAction, default=None,
                   help="run the embedded Dask scheduler in a process of its own (the default; "
                        "--no-scheduler-process: in this one)")
    p.add_argument("--max-connections", type=int, default=None,
                   help="open connections beyond which new ones are answered 503 (default 1000)")
    p.add_argument("--cluster", default=None, metavar="IMPORT.PATH",
                   help="create this Dask cluster manager instead of a LocalCluster, e.g. "
                        "dask_jobqueue.SLURMCluster (config: [dask] cluster)")
    p.add_argument("--cluster-kwargs", default=None, metavar="JSON",
                   help="keyword arguments of --cluster, e.g. '{\"cores\": 4, \"memory\": "
                        "\"8GB\"}' (config: [dask] cluster_kwargs)")
    p.add_argument("--adapt", default=None, metavar="MIN:MAX",
                   help="scale the cluster between MIN and MAX workers with the load "
                        "(config: [dask] adapt)")
    p.add_argument("--no-worker-timeout", type=float, default=None, metavar="SECONDS",
                   help="fail a task no worker can run (resources nobody has) after this long; "
                        "0: wait forever (default 60 on the embedded cluster, else forever)")
    p.add_argument("--time-limit-grace", type=float, default=None, metavar="SECONDS",
                   help="how long a node past its time_limit may take to stop before its worker "
                        "is restarted (default 10)")
    return p.parse_args(argv)


def resolve_token(ns: argparse.Namespace) -> str:
    """The token to require: none with --no-token, else env, file, config, or a new one (saved)."""
    if ns.no_token:
        return ""
    if os.environ.get("COVALENT_TOKEN"):
        return os.environ["COVALENT_TOKEN"]
    if ns.token_file:
        token = Path(ns.token_file).read_text().strip()
        if not token:
            raise ValueError(f"token file {ns.token_file} is empty")
        return token
    saved = str(read_config().get("dispatcher", {}).get("token", ""))
    if saved:
        return saved
    token = secrets.token_urlsafe(32)
    update_config("dispatcher", {"token": token})
    return token


def settings_from_args(ns: argparse.Namespace) -> Settings:
    """Arguments, then ``COVALENT_*`` variables, then the config file (named executors and
    ``[dask] cluster``, ``cluster_kwargs``, ``adapt``), read once here."""
    config = read_config()
    dask_section = config.get("dask") or {}
    env = os.environ
    cluster = ns.cluster or (None if env.get("COVALENT_CLUSTER") else dask_section.get("cluster"))
    kwargs = (json_object(ns.cluster_kwargs) if ns.cluster_kwargs else
              None if env.get("COVALENT_CLUSTER_KWARGS") else dask_section.get("cluster_kwargs"))
    adapt = ns.adapt or (None if env.get("COVALENT_ADAPT") else dask_section.get("adapt"))
    if isinstance(adapt, list) and len(adapt) == 2:  # adapt = [0, 20] in the config file
        adapt = f"{adapt[0]}:{adapt[1]}"
    if cluster is not None and not isinstance(cluster, str):
        raise ValueError(f"[dask] cluster in {config_path()} must be an import path, got {cluster!r}")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise ValueError(f"[dask] cluster_kwargs in {config_path()} must be a table, got {kwargs!r}")
    executors = config.get("executors") or {}
    return Settings.from_env(
        db_url=ns.db_url or (None if env.get("COVALENT_DB_URL") else config_db_url(config)),
        host=ns.host, port=ns.port, token=resolve_token(ns),
        data_dir=Path(ns.data_dir) if ns.data_dir else None,
        allowed_hosts=tuple(ns.allow_host) if ns.allow_host else None,
        public_url=parse_public_url(ns.public_url) if ns.public_url else None,
        address=ns.scheduler_address, n_workers=ns.workers,
        threads_per_worker=ns.threads_per_worker, memory_limit=ns.mem_per_worker,
        dashboard_address=ns.dashboard_address, store_url=ns.store_url,
        store_options=json_object(ns.store_options) if ns.store_options else None,
        max_connections=ns.max_connections, scheduler_process=ns.scheduler_process,
        cluster_class=cluster, cluster_kwargs=kwargs,
        adapt=parse_adapt(str(adapt)) if adapt is not None else None,
        executors=executors, config_source=str(config_path()),
        time_limit_grace=ns.time_limit_grace, no_worker_timeout=ns.no_worker_timeout,
    )


def config_db_url(config: dict[str, Any]) -> str | None:
    """``[database] url`` of the config file, if it sets one."""
    url = (config.get("database") or {}).get("url")
    if url is not None and not isinstance(url, str):
        raise ValueError(f"[database] url in {config_path()} must be a string")
    return url or None


def fail(code: int, message: str) -> NoReturn:
    """One line on stderr (``covalent start`` shows it) and a distinct exit code."""
    print(f"covalent dispatcher: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def inherited_socket(fd: int | None, host: str, port: int) -> socket.socket | None:
    """The listening socket this process's previous image handed over, if it is bound where
    these settings say (None, and ``fd`` closed, otherwise)."""
    if fd is None:
        return None
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        with contextlib.suppress(OSError):
            os.close(fd)
        return None
    try:
        address, bound = sock.getsockname()[:2], None
        wanted = {info[4][0] for info in socket.getaddrinfo(host, port or None, sock.family,
                                                             socket.SOCK_STREAM)}
        if sock.type == socket.SOCK_STREAM and address[0] in wanted and port in (0, address[1]):
            bound = sock
    except OSError:
        pass
    if bound is None:
        sock.close()
        return None
    bound.setblocking(False)
    return bound


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            fail(EXIT_PORT_IN_USE, f"port {port} is in use by another process; try --port")
        fail(EXIT_BAD_SETTINGS, f"cannot bind {host}:{port}: {exc.strerror}")
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def prepare_data_dir(data_dir: Path) -> None:
    """Everything the server writes is its user's alone: data dir 0700, files 0600. (The
    embedded cluster's workers go back to the user's own umask for what nodes write:
    ``USER_UMASK``, kept through a relaunch.)"""
    previous = os.umask(0o077)
    os.environ.setdefault(USER_UMASK, f"{previous:o}")
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)


async def serve(settings: Settings,
                sock: socket.socket) -> tuple[str, socket.socket | None]:
    """Start the app on ``sock`` and run until SIGTERM/SIGINT (also during start-up), or until
    it loses its cluster; returns why it is to start again ("": it is not) and, then, a copy of
    ``sock`` kept listening for the next start (closing the site closes ``sock`` itself)."""
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    stop = asyncio.Event()
    starting = True
    app = create_app(settings)
    app[RELAUNCH].stop = stop.set

    def on_signal() -> None:
        app[RELAUNCH].stopping = True
        app[RELAUNCH].reason = ""
        if starting:
            main.cancel()  # abort start-up: the finally below closes what was started
        else:
            stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    watch = LoopWatch(loop)  # logs where the loop is when it stops answering
    watch.start()
    try:
        await runner.setup()
        limit = connection_limit(settings.max_connections)
        await LimitedSite(runner, sock, limit=limit, gate=app[GATE], shutdown_timeout=10,
                          backlog=1024).start()  # a burst of connects waits, is not lost
        starting = False
        gc.freeze()  # what start-up made lives as long as the server: never scan it again
        log.info("answering on http://%s:%d", *sock.getsockname()[:2])
        await stop.wait()
    except asyncio.CancelledError:
        log.info("stopped during start-up")
    finally:
        t = time.monotonic()
        log.info("stopping")
        kept = sock.dup() if app[RELAUNCH].reason else None
        await runner.cleanup()
        watch.stop()
        log.info("stopped in %.1f s", time.monotonic() - t)
    if not app[RELAUNCH].reason and kept is not None:  # a SIGTERM while it stopped
        kept.close()
        kept = None
    return app[RELAUNCH].reason, kept


def main(argv: list[str] | None = None) -> None:
    ns = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("asyncio").addFilter(OncePerKind())
    raise_fd_limit()
    # A full collection scans every object (1 s with a 100,000-node dispatch in memory) while
    # holding the GIL, stalling every request: collect the old generation far less often.
    # Young cycles are still collected as usual.
    gc.set_threshold(20_000, 20, 50)
    # While threads parse, store and serialize a large dispatch, the event loop waits for the
    # GIL at each step of a request; a shorter switch interval (default 5 ms) hands it back sooner.
    sys.setswitchinterval(float(os.environ.get("COVALENT_SWITCH_INTERVAL", "0.001")))
    # A 100,000-node workflow is one large graph by design: no warning each time.
    dask.config.set({"distributed.admin.large-graph-warning-threshold": "64GiB"})
    try:
        settings = settings_from_args(ns)
        create_app(settings)  # validates the settings before anything is bound or locked
    except (ValueError, OSError) as exc:
        fail(EXIT_BAD_SETTINGS, str(exc))
    logfile.setup(settings.log_path, settings.log_max_bytes)
    if not settings.instance_id:
        settings = settings.with_instance(uuid.uuid4().hex)
        # The same after a relaunch (the same process): its lock file need not be rewritten.
        os.environ["COVALENT_INSTANCE_ID"] = settings.instance_id
    prepare_data_dir(settings.data_dir)
    handed = take_over()  # after a relaunch: the lock and the socket, held all along
    lock = DataDirLock(settings.data_dir)
    try:
        if not lock.adopt(handed.pop("lock", None)):
            lock.acquire()
    except AlreadyRunning as exc:
        fail(EXIT_RUNNING, str(exc))
    settings = settings.holding_data_dir()
    relaunch, kept = "", None
    try:
        sock = (inherited_socket(handed.pop("socket", None), settings.host, settings.port)
                or bind(settings.host, settings.port))
        settings = settings.with_port(sock.getsockname()[1])
        lock.publish(Instance(os.getpid(), settings.instance_id, settings.url,
                              str(settings.data_dir)))
        try:
            relaunch, kept = asyncio.run(serve(settings, sock))
        except TimeoutError as exc:
            fail(EXIT_CLUSTER, str(exc))
        except StoreError as exc:  # a database that cannot be reached, or of a newer version
            fail(EXIT_STORE, str(exc))
        except OSError as exc:  # the cluster could not start or be reached
            fail(EXIT_CLUSTER, f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # e.g. a --cluster class that makes no Dask cluster
            log.error("the dispatcher stopped", exc_info=exc)
            fail(EXIT_CLUSTER, f"{type(exc).__name__}: {exc}")
    finally:
        if not relaunch or len(relaunches()) >= MAX_RELAUNCHES:
            lock.release()
    if relaunch:
        if len(relaunches()) >= MAX_RELAUNCHES:
            fail(EXIT_CLUSTER, f"{relaunch}; not restarting again after {MAX_RELAUNCHES} "
                               "restarts in the last 10 minutes")
        fds = {"lock": lock.hand_over()}
        if kept is not None:
            fds["socket"] = kept.detach()
        execute_again(**fds)


if __name__ == "__main__":
    main()
