"""SQLiteTrigger and DatabaseTrigger (#22) against a real SQLite file and a real PostgreSQL, with
rows written by another process; their state in /triggers; the one registry of kinds."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import covalent as ct
import covalent.triggers as ct_triggers
from covalent.triggers import (BaseTrigger, DatabaseTrigger, DirTrigger, SQLiteTrigger,
                               TimeTrigger, available_triggers)
from dispatcher.app import create_app
from tests.conftest import in_process_settings, wait_until
from tests.tasks import add
from triggers.registry import KINDS


@ct.lattice
def wf(x):
    return add(x, 1)


async def pending(addr: str) -> str:
    return await asyncio.to_thread(ct.dispatch(wf, dispatcher_addr=addr, disable_run=True), 1)


async def info_of(client: Any, dispatch_id: str) -> dict[str, Any]:
    body = await (await client.get("/api/v1/triggers")).json()
    [info] = [t for t in body["triggers"] if t["dispatch_id"] == dispatch_id]
    return dict(info)


async def fired(client: Any, dispatch_id: str, n: int) -> bool:
    return (await info_of(client, dispatch_id))["fire_count"] >= n


def sqlite_in_another_process(db: Path, *statements: str) -> None:
    """Run SQL in a separate Python process, as another program writing the table would."""
    code = ("import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\n"
            "for s in sys.argv[2:]:\n    c.execute(s)\nc.commit()\n")
    subprocess.run([sys.executable, "-c", code, str(db), *statements], check=True, timeout=30)


async def register(trigger: BaseTrigger, dispatch_id: str) -> None:
    trigger.lattice_dispatch_id = dispatch_id
    await asyncio.to_thread(trigger.register)


def test_covalents_names_and_one_registry_of_kinds() -> None:
    assert available_triggers["SQLiteTrigger"] is SQLiteTrigger
    assert available_triggers["DatabaseTrigger"] is DatabaseTrigger
    assert available_triggers["NoSuchTrigger"] is None
    builtin = {c.__name__ for c in vars(ct_triggers).values()
               if isinstance(c, type) and issubclass(c, BaseTrigger) and c is not BaseTrigger}
    assert builtin == set(KINDS)  # every trigger class of the SDK has its observer
    t = SQLiteTrigger("rel/x.db", "jobs", poll_interval=3, trigger_after_n=2)
    assert Path(t.db_path).is_absolute() and t.registration()["pickled"] is None
    with pytest.raises(ValueError, match="trigger_after_n"):
        SQLiteTrigger("x.db", "jobs", trigger_after_n=0)
    with pytest.raises(ValueError, match="where_clauses"):
        DatabaseTrigger("sqlite://", "jobs", where_clauses=[3])  # type: ignore[list-item]


async def test_sqlite_trigger_fires_on_rows_another_process_inserts(dispatcher, addr,
                                                                     tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    sqlite_in_another_process(db, "CREATE TABLE jobs (id INTEGER, status TEXT)")
    filtered, clock = await pending(addr), await pending(addr)
    await register(SQLiteTrigger(db, "jobs", poll_interval=0.02, where_clauses=["status = 'new'"],
                                 trigger_after_n=2, dispatcher_addr=addr), filtered)
    await register(SQLiteTrigger(db, "jobs", poll_interval=0.02, dispatcher_addr=addr), clock)
    sqlite_in_another_process(db, "INSERT INTO jobs VALUES (1, 'done')")
    await wait_until(lambda: fired(dispatcher, clock, 3), timeout=10)
    assert (await info_of(dispatcher, filtered))["fire_count"] == 0  # no row matches its clause
    sqlite_in_another_process(db, "INSERT INTO jobs VALUES (2, 'new')")
    await wait_until(lambda: fired(dispatcher, filtered, 2), timeout=10)
    info = await info_of(dispatcher, filtered)
    assert info["active"] and info["last_error"] is None and info["next_fire"] is None
    assert datetime.fromisoformat(info["last_fired"]).tzinfo is not None
    assert info["trigger"]["where_clauses"] == ["status = 'new'"]
    first = await asyncio.to_thread(ct.get_result, filtered, True, addr)
    assert first.result == 2  # the pending dispatch ran first, then new ones
    await asyncio.to_thread(ct.stop_triggers, [filtered, clock], addr)
    assert not (await info_of(dispatcher, filtered))["active"]


async def test_a_missing_sqlite_file_is_an_error_shown_until_it_exists(dispatcher, addr,
                                                                       tmp_path: Path) -> None:
    db = tmp_path / "later.db"
    dispatch_id = await pending(addr)
    await register(SQLiteTrigger(db, "jobs", poll_interval=0.02, dispatcher_addr=addr), dispatch_id)

    async def error() -> str | None:
        return (await info_of(dispatcher, dispatch_id))["last_error"]  # type: ignore[no-any-return]

    await wait_until(error, timeout=10)
    assert "unable to open database file" in (await error() or "")
    assert not db.exists()  # polled read-only: never created by the trigger
    # `covalent status` said "fired 0 times", nothing of why
    from click.testing import CliRunner

    from dispatcher.cli import main
    shown = await asyncio.to_thread(CliRunner().invoke, main, ["status"],
                                    env={"COVALENT_DISPATCHER_ADDR": addr})
    line = next(ln for ln in shown.output.splitlines() if dispatch_id in ln)
    assert "fired 0 times; last error: " in line and "unable to open database file" in line
    sqlite_in_another_process(db, "CREATE TABLE jobs (id INTEGER)", "INSERT INTO jobs VALUES (1)")
    await wait_until(lambda: fired(dispatcher, dispatch_id, 1), timeout=10)
    assert await error() is None
    await asyncio.to_thread(ct.stop_triggers, dispatch_id, addr)


@pytest.mark.slow
async def test_database_trigger_on_a_real_postgresql(dispatcher, addr, postgres) -> None:
    url = postgres.create_database("trig")
    postgres.psql("trig", "CREATE TABLE events (id serial PRIMARY KEY, kind text)")
    good, bad = await pending(addr), await pending(addr)
    await register(DatabaseTrigger(url, "events", poll_interval=0.02,
                                   where_clauses=["kind = 'deploy'"], dispatcher_addr=addr), good)
    await register(DatabaseTrigger(url, "events", poll_interval=0.02,
                                   where_clauses=["no_such_column = 1"], dispatcher_addr=addr), bad)

    async def error() -> str | None:
        return (await info_of(dispatcher, bad))["last_error"]  # type: ignore[no-any-return]

    await wait_until(error, timeout=15)
    assert "no_such_column" in (await error() or "")  # PostgreSQL's own message
    postgres.psql("trig", "INSERT INTO events (kind) VALUES ('deploy')")  # psql: another process
    await wait_until(lambda: fired(dispatcher, good, 2), timeout=15)
    info = await info_of(dispatcher, good)
    assert info["active"] and info["last_error"] is None and len(info["new_dispatch_ids"]) >= 1
    assert (await info_of(dispatcher, bad))["active"]  # a failing poll does not stop it
    await asyncio.to_thread(ct.stop_triggers, [good, bad], addr)
    # polls ran read-only and left the table as it was
    assert postgres.psql("trig", "SELECT count(*) FROM events").strip() == "1"


async def test_database_triggers_observe_again_after_a_restart(aiohttp_client, tmp_path,
                                                               config_dir) -> None:
    settings = in_process_settings(tmp_path / "data")
    db = tmp_path / "t.db"
    sqlite_in_another_process(db, "CREATE TABLE t (x INTEGER)")
    client = await aiohttp_client(create_app(settings))
    addr = f"127.0.0.1:{client.port}"
    dispatch_id = await pending(addr)
    await register(DatabaseTrigger(f"sqlite:///{db}", "t", poll_interval=0.02, dispatcher_addr=addr),
                   dispatch_id)
    sqlite_in_another_process(db, "INSERT INTO t VALUES (1)")
    await wait_until(lambda: fired(client, dispatch_id, 1), timeout=10)
    before = await info_of(client, dispatch_id)
    await client.close()
    sqlite_in_another_process(db, "DELETE FROM t")

    client = await aiohttp_client(create_app(settings))
    after = await info_of(client, dispatch_id)
    assert after["active"] and after["last_fired"] == before["last_fired"]
    count = after["fire_count"]
    sqlite_in_another_process(db, "INSERT INTO t VALUES (2)")
    await wait_until(lambda: fired(client, dispatch_id, count + 1), timeout=10)
    await client.post("/api/v1/triggers/stop", json={"dispatch_ids": [dispatch_id]})


async def test_a_time_trigger_says_when_it_fires_next(dispatcher, addr) -> None:
    dispatch_id = await pending(addr)
    await register(TimeTrigger(time_gap=3600, dispatcher_addr=addr), dispatch_id)
    info = await info_of(dispatcher, dispatch_id)
    ahead = datetime.fromisoformat(info["next_fire"]) - datetime.now().astimezone()
    assert 3500 < ahead.total_seconds() <= 3600 and info["last_fired"] is None
    await asyncio.to_thread(ct.stop_triggers, dispatch_id, addr)
    assert (await info_of(dispatcher, dispatch_id))["next_fire"] is None


def test_observe_stand_alone_polls_until_stopped(tmp_path: Path) -> None:
    """Covalent's blocking observe(), in the user's own process."""
    db = tmp_path / "s.db"
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE s (x INTEGER)")
        c.execute("INSERT INTO s VALUES (1)")

    class Counting(SQLiteTrigger):
        fires = 0

        def trigger(self) -> None:
            Counting.fires += 1
            if Counting.fires == 3:
                self.stop()

    Counting(db, "s", poll_interval=0.01, trigger_after_n=2).observe()
    assert Counting.fires == 3


def test_dir_trigger_is_still_rebuilt_from_its_dict(tmp_path: Path) -> None:
    t = DirTrigger(tmp_path, ["created"], batch_size=3)
    t.n_changes = 2
    again = KINDS["DirTrigger"].cls.from_dict(t.to_dict())
    assert isinstance(again, DirTrigger) and (again.n_changes, again.batch_size) == (2, 3)
