"""Build the dispatcher's aiohttp application: store, Dask cluster and runner as cleanup contexts.

Start-up order: open the store, connect to (or start) the Dask cluster, start the runner and
resume the dispatches that were running when the server last stopped. Shutdown reverses it.
"""

from __future__ import annotations

import asyncio
import inspect
import contextlib
import importlib
import json
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import dask.config
from aiohttp import web
from dask.system import CPU_COUNT
from distributed import Client, LocalCluster, Nanny, Scheduler, Security, SpecCluster
from distributed.core import Status
from distributed.deploy.utils import nprocesses_nthreads
from distributed.utils import format_dashboard_link
from distributed.worker_memory import parse_memory_limit

from . import dispatches, metrics, transfer, ui, upload, user_routes
from .authz import ownership_guard
from .connections import GATE, Gate
from .dask_graph import prompt_client, prompt_cluster
from .executors import ExecutorTable
from .keys import CLUSTER_INFO, EXECUTORS, RECORDER, RUNNER, SETTINGS, STORE, TRIGGERS
from .recorder import Recorder
from .routes import error_middleware, routes
from .runner import Runner
from .relaunch import RELAUNCH, RELAUNCH_CONNECT_S, Relaunch, recent as relaunches
from .scheduler_process import SchedulerProcess
from .security import allowed_hosts, content_type_guard, host_guard, token_guard, weak_token
from .sessions import SESSIONS, Sessions
from .settings import ClusterSettings, Settings, pinned_dashboard
from .store import SqlStore, check_url, open_store
from .trigger_service import TriggerService
from .unix_comm import PREFIX, remove_socket_dir, socket_dir
from .users import ACCOUNTS, Accounts
from .worker import reaper
from .worker.blobs import BlobStore

log = logging.getLogger("covalent.dispatcher")

LOOPBACK = ("127.0.0.1", "localhost", "::1")
QUIET_WORKERS = "dispatcher.worker.quiet"  # embedded workers leave Ctrl-C to the dispatcher
REAPER = "dispatcher.worker.reaper"  # and take the processes their nodes started with them
UNIX_COMM = "dispatcher.unix_comm"  # their transport (see _start_cluster)
STALE_WRITE_S = 86400.0  # a shared store's temporary untouched this long lost its writer


def create_app(settings: Settings) -> web.Application:
    """The dispatcher application for ``settings``.

    Raises:
        ValueError: a non-loopback bind without a token, a malformed ``[executors.*]`` table,
            a cluster manager that cannot be imported, or options that contradict each other.
    """
    if settings.host not in LOOPBACK and not settings.token:
        raise ValueError(
            f"refusing to bind {settings.host}: the dispatcher runs pickled code, so any address "
            "other than loopback needs a token (leave out --no-token: the saved one is used; "
            "or --token-file FILE, or COVALENT_TOKEN)"
        )
    if settings.host not in LOOPBACK and weak_token(settings.token):
        raise ValueError(f"refusing to bind {settings.host}: {weak_token(settings.token)}")
    try:
        parse_memory_limit(settings.cluster.memory_limit, 1, logger=log)
    except (ValueError, TypeError) as exc:  # else the cluster's start fails, naming no option
        raise ValueError(f"--mem-per-worker (COVALENT_MEM_PER_WORKER) takes a size such as 2GB "
                         f"or 'auto', got {settings.cluster.memory_limit!r}: {exc}") from None
    dashboard = pinned_dashboard(settings.cluster.dashboard_address)
    if dashboard and dashboard.rpartition(":")[0].strip("[]") not in LOOPBACK and not settings.token:
        raise ValueError(
            f"refusing to serve the Dask dashboard on {dashboard}: any address other than "
            "loopback needs a token (leave out --no-token: the saved one is used; or "
            "--token-file FILE, or COVALENT_TOKEN)")
    # the web UI's browser sessions; pending connections
    sessions, gate = Sessions(token=settings.token or ""), Gate()
    app = web.Application(client_max_size=settings.max_body_bytes)
    accounts = Accounts(lambda: app[STORE])  # users with tokens of their own (#26)
    app.middlewares.extend([
        error_middleware, host_guard(allowed_hosts(settings.host, settings.allowed_hosts,
                                                   settings.public_url)),
        token_guard(settings.token, sessions, gate.passed, accounts), content_type_guard,
        ownership_guard])
    app[SETTINGS], app[SESSIONS], app[GATE], app[ACCOUNTS] = settings, sessions, gate, accounts
    app[RELAUNCH] = Relaunch()
    app[EXECUTORS] = ExecutorTable.from_config(settings.executors, settings.config_source)
    check_cluster(settings.cluster)
    check_url(settings.db_url)
    app[transfer.STORE_ROOT] = (str(settings.blob_dir), settings.store_options)
    transfer.setup(app)
    app.add_routes(routes)
    app.add_routes(user_routes.routes)
    app.cleanup_ctx.append(_store_ctx)
    app.on_shutdown.append(_stop_waiting)  # before aiohttp waits for the requests in flight
    metrics.setup(app)  # GET /metrics, counting from the recorder's commits
    app.cleanup_ctx.append(_cluster_ctx)
    app.cleanup_ctx.append(_triggers_ctx)
    app.cleanup_ctx.append(_resume_ctx)
    ui.setup(app)
    return app


async def _resume_ctx(app: web.Application) -> AsyncIterator[None]:
    """Resume unfinished dispatches in the background: the server answers meanwhile. On
    PostgreSQL, as one of the replicas sharing it: take over what nobody holds a lease on."""
    if replicated(app[STORE]):
        async for _ in _replica_ctx(app):
            yield
        return

    async def resume() -> None:
        resumed = await dispatches.resume_all(app[STORE], app[RUNNER])
        if resumed:
            log.info("resumed %d dispatches", len(resumed))

    task = asyncio.create_task(resume(), name="covalent-resume")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def replicated(store: Any) -> bool:
    """A store several replicas may share (PostgreSQL): they act on what they hold leases on."""
    return isinstance(store, SqlStore) and store.dialect.name == "postgresql"


async def _replica_ctx(app: web.Application) -> AsyncIterator[None]:
    from .notices import Notices
    from .replica import Replica

    store, runner, triggers = app[STORE], app[RUNNER], app[TRIGGERS]
    replica = Replica(getattr(store, "conninfo"))
    runner.replica = triggers.replica = replica
    app[SESSIONS].signed = True  # a UI link's ticket, taken by every replica
    cast(SqlStore, store).fencing = replica.owner_epoch

    notices = runner.notices = Notices(
        cast(SqlStore, store), getattr(store, "conninfo"), app[RECORDER],
        lambda d: d in runner.runs,
        lambda d, nodes: dispatches.cancel(store, runner, d, nodes, forward=False))

    async def acquired(resource: str, epoch: int) -> None:
        kind, _, rid = resource.partition(":")
        if kind == "trigger":
            await triggers.take(rid, epoch)
        elif await dispatches.resume(store, runner, rid, epoch):
            await notices.handle(rid)  # cancels asked for while nobody ran it
        else:
            await replica.release(resource)

    def lost(resource: str) -> None:
        kind, _, rid = resource.partition(":")
        if kind == "trigger":
            triggers.drop(rid)
        else:
            runner.lose(rid)

    replica.on_acquired, replica.on_lost = acquired, lost
    notices.stop_triggers, triggers.announce_stop = triggers.stop_here, notices.announce_stop
    await notices.start()
    if app[SETTINGS].holds_data_dir:
        await replica.succeed(app[SETTINGS].data_dir)
    await replica.start()
    log.info("replica %s: leases renewed every %g s for %g s", replica.owner, replica.renew_s,
             replica.ttl_s)
    try:
        yield
    finally:
        try:
            await app[RECORDER].flush()  # what it ran is written before it lets go
        except Exception as exc:  # noqa: BLE001 - the next owner resumes from what is stored
            log.warning("stopping with updates not written: %s", exc)
        await triggers.supervisor.close()  # their state saved while their leases are held
        t = time.monotonic()
        await replica.close()
        await notices.close()
        log.info("leases given up in %.1f s", time.monotonic() - t)


async def _triggers_ctx(app: web.Application) -> AsyncIterator[None]:
    service = TriggerService(app[STORE], app[RUNNER])
    app[TRIGGERS] = service
    restored = 0 if replicated(app[STORE]) else await service.restore()  # replicas: by lease
    if restored:
        log.info("observing %d triggers again", restored)
    try:
        yield
    finally:
        await service.supervisor.close()


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    store = open_store(settings.db_url, settings.db_path, settings.blob_dir,
                       settings.store_options, settings.store_root)
    await store.open()
    await asyncio.to_thread(upload.reset, settings.upload_dir)  # what is left there was abandoned
    # Half-written outputs of workers killed mid-write: all of them when the embedded cluster
    # (not started yet) of the one dispatcher of this store is the only writer, else those
    # untouched for a day (other clusters, or other replicas on PostgreSQL, may be writing).
    embedded = not (settings.cluster.address or settings.cluster.cluster_class or settings.db_url)
    outputs = BlobStore(settings.store_root, settings.store_options)
    swept = await asyncio.to_thread(outputs.sweep, 0.0 if embedded else STALE_WRITE_S)
    if swept:
        log.info("removed %d half-written outputs left by workers that died", swept)
    recorder = Recorder(store)
    await recorder.start()
    app[STORE], app[RECORDER] = store, recorder
    # Deletes a previous run did not finish, in the background: the server answers meanwhile.
    deleting = asyncio.create_task(store.resume_deletions(), name="covalent-deletions")
    try:
        yield
    finally:
        deleting.cancel()
        await asyncio.gather(deleting, return_exceptions=True)
        await recorder.close()
        await store.close()


async def _stop_waiting(app: web.Application) -> None:
    """Long-polls for a dispatch's end answer now: the stop does not wait for them."""
    if RECORDER in app:
        app[RECORDER].stop_waiting()


def check_cluster(cs: ClusterSettings) -> None:
    """Reject contradicting cluster options, and a cluster manager that cannot be imported."""
    if cs.address and (cs.cluster_class or cs.adapt):
        raise ValueError("--scheduler-address uses a cluster someone else runs: it takes no "
                         "--cluster or --adapt")
    if cs.cluster_class:
        cluster_class(cs.cluster_class)


def cluster_class(path: str) -> Any:
    """The class (or factory) at ``path``, e.g. ``dask_jobqueue.SLURMCluster``; ValueError."""
    module, _, name = path.rpartition(".")
    if not module or not name:
        raise ValueError(f"--cluster takes an import path such as dask_jobqueue.SLURMCluster, "
                         f"got {path!r}")
    try:
        found = getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise ValueError(f"--cluster {path}: cannot import {module} ({exc}); install it where "
                         "the dispatcher runs, e.g. pip install dask-jobqueue") from None
    except AttributeError:
        raise ValueError(f"--cluster {path}: {module} has no {name!r}") from None
    if not callable(found):
        raise ValueError(f"--cluster {path} is not a class")
    return found


def _unreachable_from_elsewhere(url: str) -> bool:
    """``url`` names this machine's loopback (only its own processes reach it there).

    >>> _unreachable_from_elsewhere("http://127.0.0.1:48008"), _unreachable_from_elsewhere("http://lb:80")
    (True, False)
    """
    return (urlsplit(url).hostname or "") in LOOPBACK


async def _cluster_ctx(app: web.Application) -> AsyncIterator[None]:
    # what the embedded cluster leaves behind (its sockets' directory), removed after it closes
    with contextlib.ExitStack() as stack:
        settings = app[SETTINGS]
        cs = settings.cluster
        cluster: Any = None
        if cs.address:
            client = await _connect(cs)
        else:
            # Read by a scheduler created in this process (the embedded one, most cluster
            # managers').
            with dask.config.set({"distributed.scheduler.no-workers-timeout":
                                  settings.no_worker_timeout}):
                if cs.cluster_class:
                    cluster = await _create_cluster(cs)
                else:
                    cluster = await _start_cluster(cs, settings.tls_dir, settings.run_dir,
                                                   stack)
            client = await Client(cluster, asynchronous=True, set_as_default=False,
                                  security=getattr(cluster, "security", None))
            if not cs.cluster_class:  # ours alone: a cluster manager's is the user's to tune
                await prompt_cluster(client)
            _scale(cluster, cs)
        prompt_client(client)
        app[CLUSTER_INFO] = {
            "scheduler": client.scheduler.address if client.scheduler is not None else "",
            "dashboard": _dashboard_link(client, cs) if cluster is not None or cs.address else "",
            "embedded": cluster is not None and not cs.cluster_class,
            "manager": (cs.cluster_class or "distributed.LocalCluster") if cluster is not None else "",
            "adapt": list(cs.adapt) if cs.adapt and cluster is not None else None,
        }
        log.info("dispatcher on %s:%d, Dask scheduler %s (%s), dashboard %s, store %s",
                 settings.host, settings.port, app[CLUSTER_INFO]["scheduler"],
                 app[CLUSTER_INFO]["manager"] or "external", app[CLUSTER_INFO]["dashboard"] or "-",
                 app[STORE].describe())
        url = settings.worker_url
        if _unreachable_from_elsewhere(url) and (cs.address or cs.cluster_class):
            log.warning("workers of the cluster reach this dispatcher at %s (for sublattices); "
                        "workers on other machines cannot: pass --public-url with an address "
                        "they reach (replicas: the load balancer's)", url)
        scheduler = getattr(cluster, "scheduler", None)  # in this process: events without a hop
        runner = Runner(app[RECORDER], client, store_root=settings.store_root,
                        storage_options=settings.store_options,
                        scheduler=scheduler if isinstance(scheduler, Scheduler) else None,
                        public_url=url, token=settings.token, executors=app[EXECUTORS],
                        time_limit_grace=settings.time_limit_grace)
        await runner.start()
        app[RUNNER] = runner
        fixed = cluster if cluster is not None and not cs.cluster_class and cs.adapt is None \
            else None  # the embedded cluster, of a fixed size: its nannies are kept there
        watcher = asyncio.create_task(_watch_cluster(client, scheduler, app[RELAUNCH], fixed),
                                      name="covalent-cluster-watch")
        try:
            yield
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            t = time.monotonic()
            await runner.close()
            log.info("runner closed in %.1f s", time.monotonic() - t)
            lost = app[RELAUNCH].lost  # nothing to reach: no graceful goodbyes
            if lost:
                with contextlib.suppress(OSError, TimeoutError):
                    await client.close(timeout=2)
            else:
                await client.close()
            if cluster is not None and not cs.cluster_class:
                await _close_embedded(cluster, 1.0 if lost else CLOSE_S)
            elif cluster is not None:
                await cluster.close()  # a cluster manager cancels its jobs or pods here
            if isinstance(scheduler, SchedulerProcess) and scheduler.proc is not None \
                    and scheduler.proc.returncode is None:  # its close was cut short
                scheduler.proc.kill()
                await scheduler.proc.wait()
            log.info("cluster client%s closed in %.1f s", "" if cluster is None else " and cluster",
                     time.monotonic() - t)


class ReapingNanny(Nanny):
    """The embedded cluster's nanny: when it kills its worker (a restart for a cancel or a
    time limit, the cluster's close) it kills what the worker's nodes started too, once the
    worker is gone (``worker.reaper``)."""

    async def kill(self, timeout: float = 5, reason: str = "nanny-kill") -> None:
        pid = getattr(getattr(self.process, "process", None), "pid", None)
        below = reaper.descendants(pid) if pid else []
        try:
            if self.process is not None:
                # Not waiting for the nodes running (Dask's default): whatever kills a worker
                # here does not want their outcomes (the server stops, and runs them again when
                # it starts; a cancel or a time limit ends them). A graceful stop with a node
                # running waited 4 s for it, then killed the worker all the same.
                await self.process.kill(reason=reason, timeout=timeout, executor_wait=False)
        finally:
            killed = reaper.kill_all(below)
            if killed:
                log.info("killed the %d processes the nodes of worker %s started", killed, pid)


CLIENT_CHECK_S = 0.5  # a lost cluster is seen within this: the runner's next steps fail


async def _watch_cluster(client: Client, scheduler: Any, relaunch: Relaunch,
                         fixed: SpecCluster | None = None) -> None:
    """Restart this server (``dispatcher.relaunch``) when its cluster is lost: the embedded
    scheduler's process exited, the client closed after failing to reconnect, or it
    reconnected to another scheduler (one restarted at the same address), which holds none of
    this server's tasks and plugins. And keep a ``fixed``-size embedded cluster at its size: a
    nanny Dask closed (see ``_start_cluster``) is started again."""
    proc = scheduler.proc if isinstance(scheduler, SchedulerProcess) else None
    first = client.scheduler_info().get("id")
    short = 0  # checks in a row that found nannies missing
    while True:
        if proc is not None:
            try:
                code = await asyncio.wait_for(proc.wait(), CLIENT_CHECK_S)
            except TimeoutError:
                pass
            else:
                relaunch.request(f"the embedded Dask scheduler's process exited ({code})")
                return
        else:
            await asyncio.sleep(CLIENT_CHECK_S)
        if client.status == "closed":
            relaunch.request("the Dask client lost its scheduler and did not reach it again")
            return
        now = client.scheduler_info().get("id")
        if first and now and now != first:
            relaunch.request(f"the Dask scheduler was restarted ({first} is now {now})")
            return
        if fixed is not None:
            gone = {name for name in fixed.worker_spec if name not in fixed.workers
                    or getattr(fixed.workers[name], "status", None) in (Status.closed,
                                                                         Status.failed)}
            short = short + 1 if gone else 0
            if short and short % 2 == 0:  # (not one being started right now), and again
                log.warning("the embedded cluster lost the nannies of workers %s: starting "
                            "them again", ", ".join(map(str, sorted(gone, key=str))))
                for name in gone:
                    fixed.workers.pop(name, None)
                fixed.scale(len(fixed.worker_spec))  # brings up what the spec has and it lacks


CLOSE_S = 15.0  # the embedded cluster's close, before its worker processes are killed


async def _close_embedded(cluster: Any, wait: float | None = None) -> None:
    """Close the embedded cluster; past ``wait`` seconds, kill the worker processes it
    started. A nanny told to close while it restarts a worker that died (over its memory
    limit) once waited for it for good, and the server with it (distributed's race, seen in
    CI). ``wait``: ``CLOSE_S`` unless given."""
    wait = CLOSE_S if wait is None else wait
    closing = asyncio.ensure_future(cluster.close())
    done, _ = await asyncio.wait([closing], timeout=wait)
    if done:
        closing.result()
        return
    pids = [p.pid for n in getattr(cluster, "workers", {}).values()
            if (p := getattr(getattr(n, "process", None), "process", None)) is not None
            and p.pid is not None]
    log.warning("the cluster did not close within %g s: killing its %d worker processes",
                wait, len(pids))
    below = [d for pid in pids for d in reaper.descendants(pid)]  # what their nodes started
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    reaper.kill_all(below)
    done, _ = await asyncio.wait([closing], timeout=5.0)  # it ends once they are gone
    if not done:
        closing.cancel()
    await asyncio.gather(closing, return_exceptions=True)


def _dashboard_link(client: Client, cs: ClusterSettings) -> str:
    """Dask's link, whose host it takes from the scheduler's address: a Unix socket's has
    none, so on the embedded cluster the host is the dashboard's own (loopback by default)."""
    link: str = client.dashboard_link or ""
    address = client.scheduler.address if client.scheduler is not None else None
    if not address or not address.startswith(PREFIX):
        return link
    port = client.scheduler_info().get("services", {}).get("dashboard")
    host = (pinned_dashboard(cs.dashboard_address) or "").rpartition(":")[0]
    if port is None or not host:
        return link
    return str(format_dashboard_link("127.0.0.1" if host == "0.0.0.0" else host, port))


async def _create_cluster(cs: ClusterSettings) -> Any:
    """``--cluster``: the cluster manager, created asynchronously on this loop; OSError (exit
    code 5, one line) if it cannot start."""
    assert cs.cluster_class
    factory = cluster_class(cs.cluster_class)
    shown = f"{cs.cluster_class}(**{json.dumps(cs.cluster_kwargs)})"
    try:
        cluster = factory(asynchronous=True,
                          **dashboard_kwargs(factory, cs.cluster_kwargs, cs.dashboard_address))
    except Exception as exc:  # a cluster manager raises anything for arguments it refuses
        raise OSError(f"cannot create {shown}: {type(exc).__name__}: {exc}") from None
    if not callable(getattr(cluster, "close", None)) or not hasattr(cluster, "scheduler_address"):
        raise OSError(f"{shown} made a {type(cluster).__name__}, not a Dask cluster manager")
    try:
        await cluster
    except BaseException as exc:
        closing = cluster.close()
        if closing is not None:
            await asyncio.shield(closing)
        if isinstance(exc, Exception):
            raise OSError(f"{shown} did not start: {_causes(exc)}") from None
        raise
    return cluster


def dashboard_kwargs(factory: Any, kwargs: dict[str, Any], address: str | None
                     ) -> dict[str, Any]:
    """``kwargs`` for a cluster manager, with its scheduler's dashboard where
    ``--dashboard-address`` says (loopback by default; None: none) unless they set one: Dask's
    own default, ``:8787``, listens on every interface, on a shared login node too.

    >>> from distributed import LocalCluster
    >>> dashboard_kwargs(LocalCluster, {"n_workers": 1}, ":0")
    {'n_workers': 1, 'dashboard_address': '127.0.0.1:0'}
    >>> dashboard_kwargs(LocalCluster, {"dashboard_address": ":9000"}, "127.0.0.1:8787")
    {'dashboard_address': ':9000'}
    >>> from dask_jobqueue import SLURMCluster  # its dashboard_address only raises
    >>> dashboard_kwargs(SLURMCluster, {"cores": 4}, "127.0.0.1:8787")
    {'cores': 4, 'scheduler_options': {'dashboard_address': '127.0.0.1:8787'}}
    """
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a callable Python cannot describe: left as given
        return kwargs
    wanted = pinned_dashboard(address)
    if "scheduler_options" in params:  # dask-jobqueue's (its own dashboard_address raises)
        options = dict(kwargs.get("scheduler_options") or {})
        if wanted is None or "dashboard_address" in options or "dashboard_address" in kwargs:
            return kwargs
        return {**kwargs, "scheduler_options": {**options, "dashboard_address": wanted}}
    if "dashboard_address" in params:  # LocalCluster and its kind
        return kwargs if "dashboard_address" in kwargs else {**kwargs, "dashboard_address": wanted}
    return kwargs


def _causes(exc: BaseException) -> str:
    """``Type: message`` of an exception and of what caused it ("Nanny failed to start" says
    little without the worker's own error)."""
    parts: list[str] = []
    seen: BaseException | None = exc
    while seen is not None and len(parts) < 4:
        parts.append(f"{type(seen).__name__}: {seen}")
        seen = seen.__cause__ or seen.__context__
    return " <- ".join(parts)


def _scale(cluster: Any, cs: ClusterSettings) -> None:
    """Adapt the cluster between ``cs.adapt`` workers, or give a created one ``n_workers``."""
    if cs.adapt is not None:
        cluster.adapt(minimum=cs.adapt[0], maximum=cs.adapt[1])
    elif cs.cluster_class and cs.n_workers is not None:
        cluster.scale(cs.n_workers)


async def _connect(cs: ClusterSettings) -> Client:
    """A client of an existing scheduler, or OSError naming it within the connect timeout."""
    assert cs.address
    # Started again after losing it (dispatcher.relaunch): give it time to come back.
    give_up = time.monotonic() + (RELAUNCH_CONNECT_S if relaunches() else 0.0)
    while True:
        # (the client's timeout is also how long it tries to reconnect later)
        client = Client(cs.address, asynchronous=True, set_as_default=False,
                        timeout=cs.connect_timeout_s)
        try:
            return await asyncio.wait_for(client, cs.connect_timeout_s)
        except (OSError, TimeoutError) as exc:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 5)
            if time.monotonic() < give_up:
                log.warning("waiting for the Dask scheduler at %s to come back: %s",
                            cs.address, str(exc) or type(exc).__name__)
                continue
            reason = str(exc) or type(exc).__name__
            raise OSError(f"cannot reach the Dask scheduler at {cs.address}: {reason}") from None


async def _start_cluster(cs: ClusterSettings, tls_dir: Path, run_dir: Path,
                         stack: contextlib.ExitStack) -> SpecCluster:
    """The embedded LocalCluster. With processes, no other local user may reach it: its comms
    go through Unix sockets in a directory only its user may enter (removed by ``stack``), or
    with ``comm="tls"`` use temporary TLS credentials (``tls_dir`` keeps a copy for its user)."""
    # The workers' scratch space (spilled data, a custom executor's results_dir) in the data
    # dir, which only its user may enter: Dask's default, /tmp/dask-scratch-space, is a name
    # anyone on the machine may take first and own.
    run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {
        "processes": cs.processes,
        "dashboard_address": pinned_dashboard(cs.dashboard_address),
        "memory_limit": cs.memory_limit,
        "local_directory": str(run_dir / "dask-scratch-space"),
    }
    if cs.dashboard_address is None:  # no dashboard; the scheduler's own HTTP routes still
        # listen, on a free loopback port rather than 8787, which someone else may hold
        kwargs["scheduler_kwargs"] = {"dashboard": False, "dashboard_address": "127.0.0.1:0"}
    if cs.processes:  # an in-process cluster talks over inproc://, which takes no host
        kwargs["preload"] = [QUIET_WORKERS, REAPER]
        kwargs["worker_class"] = ReapingNanny
        if cs.comm == "unix":
            sockets = socket_dir(run_dir)
            stack.callback(remove_socket_dir, sockets, run_dir)
            kwargs["host"], kwargs["protocol"] = str(sockets), "unix"
            # imported as each worker process is set up, before it listens: the transport is
            # there even where the package's entry point is not (an older editable install)
            kwargs["preload"].append(UNIX_COMM)
        else:
            kwargs["host"] = cs.host
            kwargs["security"] = _temporary_security(tls_dir)
    if cs.n_workers is not None:
        kwargs["n_workers"] = cs.n_workers
    if cs.adapt is not None:
        kwargs["n_workers"] = cs.adapt[0]  # adapt() takes it from there
    if cs.threads_per_worker is not None:
        kwargs["threads_per_worker"] = cs.threads_per_worker
    # Dask's SpecCluster closes a worker's nanny for good when, this long after one of the
    # worker's deaths, no worker of its name is up: a worker that died again and was being
    # restarted at that moment took its nanny with it, and nodes that kill their worker soon
    # left the cluster at 0 workers (every dispatch then NoWorkerError). The embedded
    # cluster's nannies restart their workers themselves: never.
    dask.config.set({"distributed.deploy.lost-worker-timeout": "3650d"})
    cluster: SpecCluster = (_spec_cluster(cs, tls_dir, run_dir, kwargs)
                            if cs.processes and cs.scheduler_process
                            else LocalCluster(asynchronous=True, **kwargs))
    try:
        await cluster
    except BaseException:  # a SIGTERM during start-up too: leave no worker behind
        closing = cluster.close()
        if closing is not None:
            await asyncio.shield(closing)
        raise
    return cluster


def _spec_cluster(cs: ClusterSettings, tls_dir: Path, run_dir: Path, local: dict[str, Any]
                  ) -> SpecCluster:
    """LocalCluster's workers (nannies here, worker processes under them) with the scheduler
    in a process of its own (``scheduler_process``)."""
    n, threads = local.get("n_workers"), cs.threads_per_worker  # --adapt sets the first n
    if n is None or threads is None:
        auto_n, auto_threads = nprocesses_nthreads()
        n = n if n is not None else (max(1, CPU_COUNT // threads) if threads else auto_n)
        threads = threads or max(1, CPU_COUNT // max(n, 1)) or auto_threads
    security = local.get("security")
    worker = {"cls": ReapingNanny, "options": {
        "nthreads": threads, "host": local["host"], "security": security, "dashboard": False,
        "preload": local.get("preload"), "local_directory": local["local_directory"],
        "memory_limit": parse_memory_limit(cs.memory_limit, threads, total_cores=n * threads,
                                           logger=log)}}
    scheduler = {"cls": SchedulerProcess, "options": {
        "host": local["host"], "protocol": local.get("protocol"),
        "run_dir": str(run_dir),
        "tls_dir": str(tls_dir) if security is not None else None,
        "dashboard_address": local["dashboard_address"],
        "no_workers_timeout": dask.config.get("distributed.scheduler.no-workers-timeout")}}
    return SpecCluster(workers={i: worker for i in range(n)}, scheduler=scheduler, worker=worker,
                       security=security, asynchronous=True, name="covalent")


def _temporary_security(tls_dir: Path) -> Security:
    """Fresh TLS credentials for this run, also written (0600) for the user's own clients:
    ``Security(tls_ca_file=ca.pem, tls_client_cert=cert.pem, tls_client_key=key.pem)``."""
    security: Security = Security.temporary()
    tls_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for name, attr in (("ca.pem", "tls_ca_file"), ("cert.pem", "tls_client_cert"),
                       ("key.pem", "tls_client_key")):
        pem = getattr(security, attr)  # PEM text: Security.temporary() keeps no files
        path = tls_dir / name
        path.unlink(missing_ok=True)
        path.touch(mode=0o600)
        path.write_text(pem)
    return security
