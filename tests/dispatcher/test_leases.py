"""The lease SQL on a real PostgreSQL: acquire, renew, expire, and fencing of a stale epoch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from dispatcher.replica import Replica
from dispatcher.store import leases
from dispatcher.store.postgres import PostgresStore
from tests.conftest import wait_until


@pytest.fixture
async def pg(pg_databases: Any, tmp_path: Path) -> AsyncIterator[PostgresStore]:
    from dispatcher.store.schema import LATEST

    name, url = pg_databases.take()
    store = PostgresStore(url, tmp_path / "blobs")
    await store.open()  # the migrations: the leases table
    yield store
    await store.close()
    pg_databases.give_back(name, LATEST)


@pytest.fixture
async def replicas(pg: PostgresStore) -> AsyncIterator[list[Replica]]:
    made = [Replica(pg.conninfo, ttl_s=0.6, owner=name) for name in ("a", "b")]
    yield made
    for r in made:
        await r.close()


async def _holder(r: Replica, resource: str) -> tuple[str, int, bool] | None:
    return await r._sql(leases.holder, resource)


async def test_one_holder_at_a_time_and_each_tenure_a_new_epoch(replicas: list[Replica]) -> None:
    a, b = replicas
    assert await a.acquire("dispatch:x") == 1
    assert await b.acquire("dispatch:x") is None  # held, unexpired
    assert await _holder(b, "dispatch:x") == ("a", 1, True)
    await wait_until(lambda: a.epoch("dispatch:x") is None, timeout=5)  # lapsed here first
    await wait_until(lambda: b.acquire("dispatch:x"), timeout=5)
    assert await _holder(b, "dispatch:x") == ("b", 2, True)
    await b.release("dispatch:x")
    assert await a.acquire("dispatch:x") == 3  # released: taken at once, the epoch goes on


async def test_renewal_keeps_a_lease_and_a_lost_one_is_not_renewed(replicas: list[Replica]) -> None:
    a, b = replicas
    lost: list[str] = []
    a.on_lost = lost.append
    assert await a.acquire("trigger:t") == 1
    for _ in range(3):  # renewed well within its 0.6 s: nobody else can take it
        await a.renew()
        assert await b.acquire("trigger:t") is None
        assert a.epoch("trigger:t") == 1
    a.held["trigger:t"] = (1, a.held["trigger:t"][1] + 60)  # as if its clock said "just renewed"
    await wait_until(lambda: b.acquire("trigger:t"), timeout=5)
    await a.renew()  # refused by the database: b's epoch 2 holds it
    assert lost == ["trigger:t"] and a.epoch("trigger:t") is None
    assert await _holder(a, "trigger:t") == ("b", 2, True)


async def test_a_write_under_a_stale_epoch_changes_nothing(pg: PostgresStore,
                                                          replicas: list[Replica]) -> None:
    a, b = replicas
    await pg._write(lambda db: db.execute(
        "INSERT INTO deletions(dispatch_id, queued_at) VALUES ('d', 'before')"))
    assert await a.acquire("dispatch:d") == 1
    await wait_until(lambda: b.acquire("dispatch:d"), timeout=5)

    def update(db: Any, owner: str, epoch: int, value: str) -> int:
        sql, args = leases.fenced("UPDATE deletions SET queued_at = ? WHERE dispatch_id = 'd'",
                                  [value], "dispatch:d", owner, epoch)
        return int(db.execute(sql, args).rowcount)

    assert await pg._write(update, "a", 1, "by a, stale") == 0
    assert await pg._write(update, "b", 1, "by b, wrong epoch") == 0
    assert await pg._write(update, "b", 2, "by b") == 1
    rows = await pg._read(lambda db: db.execute("SELECT queued_at FROM deletions").fetchall())
    assert [r[0] for r in rows] == ["by b"]


async def test_unowned_names_running_dispatches_and_active_triggers_nobody_holds(
        pg: PostgresStore, replicas: list[Replica]) -> None:
    a, _ = replicas

    def rows(db: Any) -> None:
        for d, status in (("d1", "RUNNING"), ("d2", "COMPLETED"), ("d3", "NEW_OBJECT"),
                          ("d4", "RUNNING")):
            db.execute("INSERT INTO dispatches(dispatch_id, root_dispatch_id, name, status,"
                       " created_at, graph, blob_refs) VALUES (?, ?, 'x', ?, ?, '{}', '[]')",
                       (d, d, status, d))
        db.execute("INSERT INTO triggers(trigger_id, dispatch_id, name, spec, active, created_at)"
                   " VALUES ('t1', 'd2', 'x', '{}', 1, 't1'), ('t2', 'd2', 'x', '{}', 0, 't2')")

    await pg._write(rows)
    assert await a._sql(leases.unowned) == ["dispatch:d1", "dispatch:d4", "trigger:t1"]
    assert await a.acquire("dispatch:d4") == 1
    assert await a._sql(leases.unowned) == ["dispatch:d1", "trigger:t1"]


def _running_dispatches(db: Any, nodes: dict[str, int]) -> None:
    for d, n in nodes.items():
        db.execute("INSERT INTO dispatches(dispatch_id, root_dispatch_id, name, status,"
                   " created_at, graph, blob_refs) VALUES (?, ?, 'x', 'RUNNING', ?, '{}', '[]')",
                   (d, d, d))
        for i in range(n):
            db.execute("INSERT INTO nodes(dispatch_id, node_id, name, kind, status)"
                       " VALUES (?, ?, 'add', 'electron', 'NEW_OBJECT')", (d, i))


async def _statuses(pg: PostgresStore) -> dict[tuple[str, int], str]:
    rows = await pg._read(lambda db: db.execute(
        "SELECT dispatch_id, node_id, status FROM nodes").fetchall())
    return {(d, int(n)): s for d, n, s in rows}


async def test_a_fenced_batch_lands_whole_or_not_at_all_when_taken_over_between_statements(
        pg: PostgresStore, replicas: list[Replica]) -> None:
    """A takeover committed between two statements of one batch once left a cancel on 94,089
    of 100,000 nodes and the rest NEW_OBJECT. Now the batch's part under the lost tenure is
    rolled back, and the part under a tenure still held is written."""
    import psycopg

    from dispatcher.state import DispatchUpdate, NodeUpdate, Status

    a, b = replicas
    keeper = Replica(pg.conninfo, ttl_s=60, owner="c")  # holds e throughout
    try:
        await pg._write(_running_dispatches, {"d": 2, "e": 1})
        assert await a.acquire("dispatch:d") == 1
        assert await keeper.acquire("dispatch:e") == 1
        pg.fencing = {"dispatch:d": ("a", 1), "dispatch:e": ("c", 1)}.get
        with psycopg.connect(pg.conninfo) as blocker:  # holds d's node 1: the batch waits there
            blocker.execute("SELECT 1 FROM nodes WHERE dispatch_id = 'd' AND node_id = 1"
                            " FOR UPDATE")
            batch = asyncio.ensure_future(pg.apply(  # RUNNING, then the cancel: 3 statements
                [NodeUpdate("d", 0, status=Status.RUNNING, start_time="t0"),
                 NodeUpdate("e", 0, status=Status.RUNNING, start_time="t0"),
                 NodeUpdate("d", 1, status=Status.CANCELLED, end_time="t1")],
                [DispatchUpdate("d", status=Status.CANCELLED, end_time="t1")]))
            waiting = "SELECT count(*) FROM pg_locks WHERE NOT granted"
            await wait_until(lambda: pg._read(lambda db: db.execute(waiting).fetchone()[0]),
                             timeout=10)
            await wait_until(lambda: b.acquire("dispatch:d"), timeout=5)  # a's lapsed
            blocker.rollback()
        await asyncio.wait_for(batch, 10)
        assert await _statuses(pg) == {("d", 0): "NEW_OBJECT", ("d", 1): "NEW_OBJECT",
                                       ("e", 0): "RUNNING"}
        assert await pg.get_status("d") == Status.RUNNING  # b resumes it from here
    finally:
        await keeper.close()


async def test_a_takeover_waits_for_a_commit_that_holds_the_lease_and_not_for_a_paused_one(
        pg: PostgresStore, replicas: list[Replica], monkeypatch: pytest.MonkeyPatch) -> None:
    import psycopg

    from dispatcher.errors import StoreBusy
    from dispatcher.store.postgres import PgDb

    a, b = replicas
    await pg._write(_running_dispatches, {"d": 0, "e": 0})
    assert await a.acquire("dispatch:d") == 1
    assert await a.acquire("dispatch:e") == 1
    with psycopg.connect(pg.conninfo) as writer:  # a's commit, held between hold and COMMIT
        assert leases.hold(PgDb(writer), {"dispatch:d": ("a", 1), "dispatch:x": ("a", 1)}) \
            == {"dispatch:d"}  # x: no such lease

        async def expired() -> bool:  # in the database's clock: b could take it, but for a's lock
            held = await _holder(b, "dispatch:d")
            return held is not None and not held[2]

        await wait_until(expired, timeout=5)
        with pytest.raises(StoreBusy):  # after leases.LOCK_WAIT_MS
            await b.acquire("dispatch:d")
        assert await b.take_unowned() == ["dispatch:e"]  # d: at its next round
        writer.commit()
        assert await b.take_unowned() == ["dispatch:d"]
    assert (await _holder(b, "dispatch:d"))[:2] == ("b", 2)  # type: ignore[index]
    monkeypatch.setattr(leases, "HOLD_IDLE_MS", 1500)
    await b.release("dispatch:e")
    assert await a.acquire("dispatch:e") == 3
    writer = psycopg.connect(pg.conninfo)
    try:  # paused for good between hold and COMMIT: its session ends after HOLD_IDLE_MS
        assert leases.hold(PgDb(writer), {"dispatch:e": ("a", 3)}) == {"dispatch:e"}

        async def taken() -> bool:
            return "dispatch:e" in await b.take_unowned()

        await wait_until(taken, timeout=10)
        assert (await _holder(b, "dispatch:e"))[:2] == ("b", 4)  # type: ignore[index]
        with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout):
            writer.commit()
    finally:
        writer.close()


async def test_a_busy_event_loop_keeps_its_leases_and_a_stuck_one_gives_them_up(
        pg: PostgresStore) -> None:
    """Renewals run beside the event loop: a loop held for longer than the lease by one piece of
    work (a 10-18 s graph parse once) kept losing every lease; a loop that never runs again
    must not hold them for good."""
    import time

    a = Replica(pg.conninfo, ttl_s=1.2, renew_s=0.2, owner="a", loop_live_s=3.0)
    b = Replica(pg.conninfo, ttl_s=1.2, renew_s=0.2, owner="b")
    lost: list[str] = []
    a.on_lost = lost.append
    try:
        await a.start()
        assert await a.acquire("dispatch:x") == 1
        time.sleep(2.0)  # the loop held: past the 1.2 s lease (the fault this test injects)
        assert await b.acquire("dispatch:x") is None
        assert a.epoch("dispatch:x") == 1 and lost == []
        time.sleep(4.5)  # held past loop_live_s: given up, as by a replica that hung
        assert await b.acquire("dispatch:x") == 2
        assert a.epoch("dispatch:x") is None and lost == ["dispatch:x"]
    finally:
        await a.close()
        await b.close()
