"""Build the dispatcher's aiohttp application: store, Dask cluster and runner as cleanup contexts.

Start-up order: open the store, connect to (or start) the Dask cluster, start the runner and
resume the dispatches that were running when the server last stopped. Shutdown reverses it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from distributed import Client, LocalCluster

from . import dispatches
from .keys import CLUSTER_INFO, RUNNER, SETTINGS, STORE, TRIGGERS
from .routes import error_middleware, routes, token_middleware
from .runner import Runner
from .settings import Settings, pinned_dashboard
from .store import SqliteStore
from .trigger_service import TriggerService

log = logging.getLogger("covalent.dispatcher")

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def create_app(settings: Settings) -> web.Application:
    """The dispatcher application for ``settings``.

    Raises:
        ValueError: a non-loopback bind without a token.
    """
    if settings.host not in LOOPBACK and not settings.token:
        raise ValueError(
            f"refusing to bind {settings.host}: the dispatcher runs pickled code, so any address "
            "other than loopback needs a token (--token or COVALENT_TOKEN)"
        )
    dashboard = pinned_dashboard(settings.cluster.dashboard_address)
    if dashboard and dashboard.rpartition(":")[0].strip("[]") not in LOOPBACK and not settings.token:
        raise ValueError(
            f"refusing to serve the Dask dashboard on {dashboard}: any address other than "
            "loopback needs a token (--token or COVALENT_TOKEN)")
    app = web.Application(
        middlewares=[error_middleware, token_middleware],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app.add_routes(routes)
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_cluster_ctx)
    app.cleanup_ctx.append(_triggers_ctx)
    return app


async def _triggers_ctx(app: web.Application) -> AsyncIterator[None]:
    service = TriggerService(app[STORE], app[RUNNER])
    app[TRIGGERS] = service
    restored = await service.restore()
    if restored:
        log.info("observing %d triggers again", restored)
    try:
        yield
    finally:
        await service.supervisor.close()


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    store = SqliteStore(settings.db_path, settings.blob_dir)
    await store.run(store.open)
    app[STORE] = store
    try:
        yield
    finally:
        store.shutdown()


async def _cluster_ctx(app: web.Application) -> AsyncIterator[None]:
    cs = app[SETTINGS].cluster
    cluster: LocalCluster | None = None
    if cs.address:
        client = await Client(cs.address, asynchronous=True, set_as_default=False)
    else:
        kwargs: dict[str, Any] = {
            "processes": cs.processes,
            "dashboard_address": pinned_dashboard(cs.dashboard_address),
            "memory_limit": cs.memory_limit,
        }
        if cs.processes:  # an in-process cluster talks over inproc://, which takes no host
            kwargs["host"] = cs.host
        if cs.n_workers is not None:
            kwargs["n_workers"] = cs.n_workers
        if cs.threads_per_worker is not None:
            kwargs["threads_per_worker"] = cs.threads_per_worker
        cluster = await LocalCluster(asynchronous=True, **kwargs)
        client = await Client(cluster, asynchronous=True, set_as_default=False)
    app[CLUSTER_INFO] = {
        "scheduler": client.scheduler.address,
        "dashboard": client.dashboard_link if cluster is not None or cs.address else "",
        "embedded": cluster is not None,
    }
    log.info("dispatcher on %s:%d, Dask scheduler %s, dashboard %s, store %s",
             app[SETTINGS].host, app[SETTINGS].port, app[CLUSTER_INFO]["scheduler"],
             app[CLUSTER_INFO]["dashboard"] or "-", app[SETTINGS].db_path)
    settings = app[SETTINGS]
    url = f"http://{settings.host}:{settings.port}" if settings.port else ""
    runner = Runner(app[STORE], client, public_url=url, token=settings.token)
    await runner.start()
    app[RUNNER] = runner
    try:
        resumed = await dispatches.resume_all(app[STORE], runner)
        if resumed:
            log.info("resumed %d dispatches: %s", len(resumed), ", ".join(resumed))
        yield
    finally:
        await runner.close()
        await client.close()
        if cluster is not None:
            await cluster.close()  # type: ignore[misc]
