"""The dispatcher on PostgreSQL when the database misbehaves: it stops and restarts under load,
every pooled connection is taken, a statement runs past its time limit (issue #25).

Requests that cannot be stored answer 503 with Retry-After (the SDK waits them out), the
recorder keeps what it could not write and writes it once the database answers, and nothing
acknowledged is lost. The session's PostgreSQL server (``tests/pg.py``) is stopped and started
by these tests; each test has a database of its own.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import covalent as ct
from covalent._dispatch import build_submission
from tests.conftest import wait_until
from tests.faults.conftest import REPO, ServerProcess
from tests.tasks import add, gate

pytestmark = [pytest.mark.slow, pytest.mark.processes, pytest.mark.timeout(180),
              pytest.mark.all_stores]


@ct.lattice
def plus_one(x):
    return add(x, 1)


@ct.lattice
def gated(x, started, release):
    return add(gate(x, started, release), 1)


@pytest.fixture
def database(postgres: Any, pg_databases: Any) -> Iterator[str]:
    from dispatcher.store.schema import LATEST

    name, url = pg_databases.take()
    yield url
    postgres.start_if_stopped()
    pg_databases.give_back(name, LATEST)


def pg_server(tmp_path: Path, url: str, monkeypatch: pytest.MonkeyPatch) -> ServerProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               COVALENT_CONFIG_DIR=str(tmp_path / "config"), COVALENT_DB_URL=url)
    env.pop("COVALENT_TOKEN", None)
    server = ServerProcess(tmp_path / "data", env, workers=1)
    monkeypatch.setenv("COVALENT_TOKEN", server.token)
    monkeypatch.setenv("COVALENT_CONFIG_DIR", str(tmp_path / "config"))
    return server


async def result(server: ServerProcess, dispatch_id: str) -> Any:
    return await asyncio.wait_for(
        asyncio.to_thread(ct.get_result, dispatch_id, True, server.addr), 90)


async def test_a_database_restart_under_load_loses_nothing_acknowledged(
        postgres: Any, database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = pg_server(tmp_path, database, monkeypatch)
    server.start()
    try:
        first = await asyncio.to_thread(ct.dispatch(plus_one, dispatcher_addr=server.addr), 1)
        started, release = tmp_path / "started", tmp_path / "release"
        running = await asyncio.to_thread(ct.dispatch(gated, dispatcher_addr=server.addr), 10,
                                          str(started), str(release))
        await wait_until(started.exists, timeout=30)

        await asyncio.to_thread(postgres.stop)
        refused_id = str(uuid.uuid4())
        body = build_submission(plus_one, (5,), {}, dispatch_id=refused_id, disable_run=False)
        code, headers, answer = await asyncio.to_thread(server.post_dispatch, body)
        assert code == 503 and headers.get("Retry-After") == "1", answer
        assert b'"Unavailable"' in answer and b"cannot be reached" in answer
        assert await asyncio.to_thread(server.get, "/health") == 200  # still serving
        # Meanwhile the SDK submits (it waits out the 503s) and the gated node finishes: its
        # outcome waits in the recorder until the database is back.
        later = asyncio.create_task(asyncio.to_thread(
            ct.dispatch(plus_one, dispatcher_addr=server.addr), 41))
        await wait_until(lambda: server.log.read_text().count("store unavailable on POST") >= 2,
                         timeout=30)  # the SDK's submission was answered 503 too
        release.touch()
        await wait_until(lambda: "store write failed" in server.log.read_text(), timeout=30)
        await asyncio.to_thread(postgres.start)

        code, _, answer = await asyncio.to_thread(server.post_dispatch, body)  # the refused one, again
        assert code == 201, answer
        expected = {first: 2, running: 12, await later: 42, refused_id: 6}
        for dispatch_id, value in expected.items():
            r = await result(server, dispatch_id)
            assert (r.status, r.result) == (ct.status.COMPLETED, value), (dispatch_id, r.error)
    finally:
        server.stop()


async def test_after_a_long_outage_the_dispatcher_serves_within_a_second_or_two(
        postgres: Any, database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: the pool retried its lost connection after 1, 2, 4, 8... s, so a request after
    # a 10 s outage waited out the backoff (503 "all 4 connections ... in use" while none was).
    server = pg_server(tmp_path, database, monkeypatch)
    server.start()
    try:
        done = await asyncio.to_thread(ct.dispatch(plus_one, dispatcher_addr=server.addr), 1)
        assert (await result(server, done)).result == 2
        with psycopg.connect(database, autocommit=True) as locker:  # the pool grows to all 4
            locker.execute("BEGIN")
            locker.execute("LOCK TABLE dispatches IN ACCESS EXCLUSIVE MODE")
            readers = [threading.Thread(target=server.get, args=(f"/dispatches/{done}/status",))
                       for _ in range(4)]
            for t in readers:
                t.start()
            await wait_until(lambda: _waiting_on_lock(database) >= 4, timeout=30)
            locker.execute("ROLLBACK")
        for t in readers:
            await asyncio.to_thread(t.join, 30)
        await asyncio.to_thread(postgres.stop)
        down = time.monotonic()
        while time.monotonic() - down < 10:  # clients keep asking: every connection is found
            assert await asyncio.to_thread(server.get, f"/dispatches/{done}/status") == 503
        await asyncio.to_thread(postgres.start)
        back = time.monotonic()
        codes = []
        while time.monotonic() - back < 15 and 200 not in codes:
            codes.append(await asyncio.to_thread(server.get, f"/dispatches/{done}/status"))
        assert codes[-1] == 200, codes
        assert time.monotonic() - back < 2.0, codes
        assert "connections to the database are in use" not in server.log.read_text()
    finally:
        server.stop()


async def test_every_connection_taken_answers_503_then_recovers(
        database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = pg_server(tmp_path, database + "?pool_max=2&pool_timeout=1", monkeypatch)
    server.start()
    try:
        done = await asyncio.to_thread(ct.dispatch(plus_one, dispatcher_addr=server.addr), 1)
        assert (await result(server, done)).result == 2
        with psycopg.connect(database, autocommit=True) as locker:
            locker.execute("BEGIN")
            locker.execute("LOCK TABLE dispatches IN ACCESS EXCLUSIVE MODE")
            # Two reads wait for the lock, each holding one of the two connections...
            holders = [threading.Thread(target=server.get, args=(f"/dispatches/{done}/status",))
                       for _ in range(2)]
            for t in holders:
                t.start()
            await wait_until(lambda: _waiting_on_lock(database) >= 2, timeout=30)
            # ... so a third finds none within pool_timeout: 503, and the server still answers.
            code = await asyncio.to_thread(server.get, f"/dispatches/{done}/status")
            assert code == 503
            assert await asyncio.to_thread(server.get, "/health") == 200
            locker.execute("ROLLBACK")
        for t in holders:
            await asyncio.to_thread(t.join, 30)
        again = await asyncio.to_thread(ct.dispatch(plus_one, dispatcher_addr=server.addr), 2)
        assert (await result(server, again)).result == 3
        assert "all 2 connections to the database are in use" in server.log.read_text()
    finally:
        server.stop()


async def test_a_statement_past_its_timeout_answers_503_and_the_sdk_waits_it_out(
        database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = pg_server(tmp_path, database + "?statement_timeout=1000", monkeypatch)
    server.start()
    locker = psycopg.connect(database, autocommit=True)
    try:
        locker.execute("BEGIN")
        locker.execute("LOCK TABLE dispatches, nodes IN ACCESS EXCLUSIVE MODE")
        dispatch_id = str(uuid.uuid4())
        body = build_submission(plus_one, (1,), {}, dispatch_id=dispatch_id, disable_run=False)
        code, headers, answer = await asyncio.to_thread(server.post_dispatch, body)
        assert (code, headers.get("Retry-After")) == (503, "1"), answer
        assert b"statement_timeout" in answer
        locker.execute("ROLLBACK")
        code, _, answer = await asyncio.to_thread(server.post_dispatch, body)  # nothing was kept
        assert code == 201, answer
        assert (await result(server, dispatch_id)).result == 2

        # A lock held past several timeouts: the SDK retries the 503s until it goes through.
        locker.execute("BEGIN")
        locker.execute("LOCK TABLE dispatches IN ACCESS EXCLUSIVE MODE")
        timer = threading.Timer(3.0, lambda: locker.execute("ROLLBACK"))
        timer.start()
        t = time.monotonic()
        later = await asyncio.to_thread(ct.dispatch(plus_one, dispatcher_addr=server.addr), 41)
        assert time.monotonic() - t > 1.0  # it waited for the lock rather than fail
        timer.join()
        assert (await result(server, later)).result == 42
    finally:
        locker.close()
        server.stop()


def _waiting_on_lock(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                           " AND datname = current_database()").fetchone()
        return int(row[0]) if row else 0


@pytest.mark.parametrize("fault", ["role", "database", "setting"])
async def test_a_database_url_that_names_nothing_says_what_postgresql_said(
        postgres: Any, tmp_path: Path, fault: str) -> None:
    # Before: "cannot connect to PostgreSQL ... within 10 s", the reason only in pool warnings.
    from dispatcher.errors import StoreUnavailable
    from dispatcher.store.postgres import PostgresStore

    url = postgres.url("postgres") + "?pool_timeout=1"
    url = {"role": url.replace(f"{postgres.user}@", "nobody_here@"),
           "database": url.replace("/postgres?", "/no_such_db?"),
           "setting": url + "&statement_timeout=-5"}[fault]
    store = PostgresStore(url, tmp_path / "blobs")
    with pytest.raises(StoreUnavailable) as caught:
        await store.open()
    said = {"role": 'role "nobody_here" does not exist',
            "database": 'database "no_such_db" does not exist',
            "setting": 'outside the valid range for parameter "statement_timeout"'}[fault]
    assert said in str(caught.value)


def test_a_database_url_parameter_that_is_no_number_names_the_url_not_a_flag() -> None:
    # Before: "--db-url: pool_max must be a number" when the URL came from COVALENT_DB_URL.
    from dispatcher.store import check_url

    with pytest.raises(ValueError) as caught:
        check_url("postgresql://me@db.example/covalent?pool_max=abc")
    assert str(caught.value) == "the database URL's pool_max must be a number, got 'abc'"
