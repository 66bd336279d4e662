"""Fixtures: a real dispatcher on 127.0.0.1 (random port) with a real Dask cluster and store.

A test that reaches a store is parametrized over the stores in ``COVALENT_TEST_STORES``
(default ``sqlite,postgres``) through one fixture, ``store_kind``: ``db_url`` gives each test a
store of its own (the data dir's SQLite file, or a fresh database on the session's PostgreSQL
server) and sets ``COVALENT_DB_URL`` for what the test starts (in-process apps through
``in_process_settings``, server processes through their environment). The store-facing tests
(``pytest.mark.all_stores``: the store, state, recorder, migrations, deletes, metrics, store
faults, upgrades, a dispatch end to end, the UI's queries) run on every listed store; the others
on the first one only, so that CI on 2 cores stays under 25 minutes (``COVALENT_TEST_ALL_STORES=1``
runs every test on every store).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from dispatcher.app import create_app
from dispatcher.settings import ClusterSettings, Settings


async def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01) -> Any:
    """Poll ``predicate`` (sync or async) every ``interval`` until truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


JSON = {"Content-Type": "application/json"}


def auth_headers() -> dict[str, str]:
    """The headers the SDK would send: the token of the config file the server saved."""
    from covalent.config import client_config

    token = client_config().token
    return {"Authorization": f"Bearer {token}"} if token else {}


async def run(lattice: Any, addr: str, *args: Any, **kwargs: Any) -> Any:
    """Dispatch ``lattice`` through the SDK and wait for its Result (off the event loop)."""
    import covalent as ct

    dispatch_id = await asyncio.to_thread(ct.dispatch(lattice, dispatcher_addr=addr), *args, **kwargs)
    return await fetched(dispatch_id, addr)


async def fetched(dispatch_id: str, addr: str, wait: bool = True) -> Any:
    """``ct.get_result`` with everything a Result downloads lazily already downloaded.

    The in-process server runs on the test's own event loop: a Result that fetched an output
    on first access from a test coroutine would block the loop that must answer it.
    """
    import covalent as ct

    def get() -> Any:
        result = ct.get_result(dispatch_id, wait=wait, dispatcher_addr=addr)
        result.get_all_node_outputs()
        result.inputs  # noqa: B018 - downloads it
        result.lattice  # noqa: B018
        return result

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an unloadable output warns again on use
        return await asyncio.to_thread(get)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for processes that need one up front)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_processes(procs: list[subprocess.Popen[Any]], grace: float = 5.0) -> None:
    """SIGTERM the processes a test started (last first), SIGKILL those still there after
    ``grace`` seconds in all (a Dask worker whose task never ends waits for it: it waited
    15 s each, 30 s for a test's two, in CI)."""
    for p in reversed(procs):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in reversed(procs):
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


@contextlib.contextmanager
def dask_processes(cwd: Path, env: dict[str, str], workers: list[list[str]]) -> Iterator[str]:
    """``dask scheduler`` and a ``dask worker`` (one thread, no nanny) per entry of ``workers``
    (its extra arguments), on 127.0.0.1; yields the scheduler address, stops them by PID."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    quiet: dict[str, Any] = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL,
                             "env": env, "cwd": cwd}
    worker = [sys.executable, "-m", "dask", "worker", address, "--nthreads", "1", "--no-nanny",
              "--host", "127.0.0.1", "--no-dashboard"]
    procs = [subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1",
                               "--port", str(port), "--no-dashboard"], **quiet)]
    try:
        procs += [subprocess.Popen([*worker, *extra], **quiet) for extra in workers]
        yield address
    finally:
        stop_processes(procs)


def in_process_settings(data_dir: Path, **cluster: Any) -> Settings:
    """An in-process app's settings, on the test's store (``db_url`` sets COVALENT_DB_URL)."""
    return Settings(
        data_dir=data_dir,
        port=0,
        db_url=os.environ.get("COVALENT_DB_URL", ""),
        cluster=ClusterSettings(processes=False, n_workers=1, threads_per_worker=2,
                                dashboard_address=None, **cluster),
    )


STORES = [s for s in os.environ.get("COVALENT_TEST_STORES", "sqlite,postgres").split(",") if s]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep a test's runs on the stores after the first only if it is marked ``all_stores``."""
    if len(STORES) < 2 or os.environ.get("COVALENT_TEST_ALL_STORES") == "1":
        return
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        kind = callspec.params.get("store_kind") if callspec is not None else None
        on_other = kind is not None and kind != STORES[0]
        (drop if on_other and item.get_closest_marker("all_stores") is None else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session", params=STORES)
def store_kind(request: pytest.FixtureRequest) -> str:
    """``sqlite`` or ``postgres``: the store the test runs on (session-scoped, so pytest runs
    the tests of one store, then those of the other)."""
    if request.param not in ("sqlite", "postgres"):
        pytest.fail(f"COVALENT_TEST_STORES lists an unknown store {request.param!r}")
    if request.param == "postgres":
        request.getfixturevalue("postgres")  # skips here if PostgreSQL is not installed
    return str(request.param)


def new_database(request: pytest.FixtureRequest, store_kind: str) -> tuple[str, Callable[[], None]]:
    """A store of its own: ("", nothing) for SQLite (the data dir's file), else an empty
    PostgreSQL database's URL and what hands it back (emptied) for the next test."""
    if store_kind == "sqlite":
        return "", lambda: None
    from dispatcher.store.schema import LATEST

    databases = request.getfixturevalue("pg_databases")
    name, url = databases.take()
    return url, lambda: databases.give_back(name, LATEST)


@pytest.fixture(scope="session")
def pg_databases(postgres: Any) -> Any:
    """The session's test databases on the PostgreSQL server (``tests.pg.Databases``)."""
    from tests.pg import Databases

    return Databases(postgres)


@pytest.fixture
def db_url(request: pytest.FixtureRequest, store_kind: str,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The test's database URL ("" for the embedded SQLite), also in ``COVALENT_DB_URL``."""
    url, drop = new_database(request, store_kind)
    if url:
        monkeypatch.setenv("COVALENT_DB_URL", url)
    else:
        monkeypatch.delenv("COVALENT_DB_URL", raising=False)
    yield url
    drop()


@pytest.fixture
async def store(db_url: str, tmp_path: Path) -> AsyncIterator[Any]:
    """An open store of the test's kind (no server), closed at teardown."""
    from dispatcher.store import open_store

    s = open_store(db_url, tmp_path / "d.db", tmp_path / "blobs")
    await s.open()
    yield s
    await s.close()


@pytest.fixture(autouse=True)
def _release_blocked_tasks() -> Any:
    from tests import tasks

    tasks.release.clear()
    yield
    tasks.release.set()


@pytest.fixture
def private_tempdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tempfile``'s directory in this test's process: the temporary files ``ct.fs.File()``
    names (a transfer without a local end, as in Covalent) are made in its ``tmp_path`` rather
    than left in the machine's /tmp after every run."""
    directory = tmp_path / "tempfiles"
    directory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    return directory


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str) -> Path:
    """Keep the SDK away from the user's real config; the test's store in COVALENT_DB_URL."""
    d = tmp_path / "config"
    monkeypatch.setenv("COVALENT_CONFIG_DIR", str(d))
    monkeypatch.delenv("COVALENT_DISPATCHER_ADDR", raising=False)
    monkeypatch.delenv("COVALENT_TOKEN", raising=False)
    return d


SEEN = web.AppKey("requests_seen", list)


async def _note_request(request: web.Request, response: web.StreamResponse) -> None:
    request.app[SEEN].append((request.method, request.path))


@pytest.fixture
async def dispatcher(config_dir: Path, aiohttp_client: Any, tmp_path: Path) -> AsyncIterator[TestClient]:
    """A live dispatcher app on a random loopback port, with an in-process Dask cluster (its
    store set up first, so it is torn down after the app)."""
    from tests import tasks

    app = create_app(in_process_settings(tmp_path / "data"))
    app[SEEN] = []
    app.on_response_prepare.append(_note_request)
    yield await aiohttp_client(app)
    tasks.release.set()  # before the cluster closes: an in-process worker waits for its threads


@pytest.fixture
def requests_seen(dispatcher: TestClient) -> list[tuple[str, str]]:
    """(method, path) of every request the live dispatcher has answered, in order."""
    return dispatcher.app[SEEN]  # type: ignore[no-any-return]


@pytest.fixture
def addr(dispatcher: TestClient) -> str:
    """``host:port`` of the live dispatcher, as an SDK user would pass it."""
    return f"127.0.0.1:{dispatcher.port}"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 (one for the session), stopped at teardown by its PID."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not accepts(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("moto server did not start")
            time.sleep(0.02)  # another process is starting; nothing to wait on but its port
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def accepts(port: int) -> bool:
    """Something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
        return True
    except OSError:
        return False


def s3_bucket(endpoint: str, name: str) -> tuple[str, dict[str, Any]]:
    """A fresh bucket on the moto server and the s3fs options that reach it."""
    import s3fs

    opts = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
    name = "b-" + name.lower().replace("_", "-")[-40:]
    s3fs.S3FileSystem(skip_instance_cache=True, **opts).mkdir(name)
    return name, opts


@pytest.fixture(scope="session")
def postgres() -> Iterator[Any]:
    """A real PostgreSQL server for the session (``tests/pg.py``), stopped at teardown; skips
    where PostgreSQL is not installed, unless COVALENT_TEST_REQUIRE_POSTGRES=1 (CI)."""
    from tests.pg import remove, start_postgres

    server = start_postgres()
    if server is None:
        if os.environ.get("COVALENT_TEST_REQUIRE_POSTGRES") == "1":
            pytest.fail("PostgreSQL is not installed (Debian's postgresql package)")
        pytest.skip("PostgreSQL is not installed (Debian's postgresql package)")
    try:
        yield server
    finally:
        remove(server)


@pytest.fixture(scope="session")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One dispatcher process with two worker processes for the session (~3 s to start), shared
    by the docs, examples, notebooks and the randomized end-to-end tests; stopped by PID."""
    from tests.faults.conftest import ServerProcess, Shared, process_env

    root = tmp_path_factory.mktemp("shared-server")
    env = process_env(root / "config")
    for name in ("COVALENT_DISPATCHER_ADDR", "COVALENT_TOKEN", "COVALENT_DB_URL"):
        env.pop(name, None)  # on SQLite, whichever test's store asked for it first
    # Workflows of more than 3 tasks go to Dask in chunks (of 1, 2, 4, ... tasks), as graphs
    # of more than 20,000 do by default: the randomized final-state tests, the docs, examples
    # and notebooks run both ways (dispatcher/dask_graph.py, CHUNKED_ABOVE).
    env["COVALENT_SUBMIT_CHUNKS"] = "3,1"
    server = ServerProcess(root / "data", env)
    server.start()
    client_env = dict(server.env, COVALENT_DISPATCHER_ADDR=server.addr)
    try:
        yield Shared(server, client_env)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def store_server(request: pytest.FixtureRequest, store_kind: str,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A dispatcher process on the test's store for a module: the shared one on SQLite, else
    one of its own on a database of its own (both stopped by PID)."""
    if store_kind == "sqlite":
        yield request.getfixturevalue("shared_server")
        return
    from tests.faults.conftest import ServerProcess, Shared, process_env

    url, drop = new_database(request, store_kind)
    root = tmp_path_factory.mktemp(f"{store_kind}-server")
    env = process_env(root / "config")
    env.pop("COVALENT_DISPATCHER_ADDR", None)
    env["COVALENT_DB_URL"] = url
    server = ServerProcess(root / "data", env)
    server.start()
    try:
        yield Shared(server, dict(server.env, COVALENT_DISPATCHER_ADDR=server.addr))
    finally:
        server.stop()
        drop()
