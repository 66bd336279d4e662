"""Triggers against the real server: time and directory triggers, custom ones, durability."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from pathlib import Path

import pytest

import covalent as ct
from covalent.errors import DispatchNotFoundError
from covalent.triggers import BaseTrigger, DirTrigger, TimeTrigger
from dispatcher.app import create_app
from dispatcher.keys import STORE, TRIGGERS
from tests.conftest import fetched, in_process_settings, wait_until
from tests.tasks import add

pytestmark = pytest.mark.all_stores  # run on every store (tests/conftest.py)


@ct.lattice
def wf(x):
    return add(x, 1)


async def triggers_of(client, dispatch_id: str) -> list[dict]:
    body = await (await client.get("/api/v1/triggers")).json()
    return [t for t in body["triggers"] if t["dispatch_id"] == dispatch_id]


async def dispatch_count(client) -> int:
    body = await (await client.get("/api/v1/dispatches?limit=10000")).json()
    return len(body["dispatches"])


async def pending(addr: str) -> str:
    return await asyncio.to_thread(ct.dispatch(wf, dispatcher_addr=addr, disable_run=True), 1)


def test_trigger_without_dispatch_id_raises() -> None:
    with pytest.raises(RuntimeError, match="no lattice_dispatch_id"):
        TimeTrigger(1).trigger()
    with pytest.raises(ValueError, match="event_names"):
        DirTrigger(".", ["touched"])
    with pytest.raises(ValueError, match="time_gap"):
        TimeTrigger(0)


async def test_time_trigger_starts_then_redispatches_until_stopped(dispatcher, addr) -> None:
    dispatch_id = await pending(addr)
    trigger = TimeTrigger(time_gap=0.05, dispatcher_addr=addr)
    trigger.lattice_dispatch_id = dispatch_id
    await asyncio.to_thread(trigger.register)
    await wait_until(lambda: _fired(dispatcher, dispatch_id, 3), timeout=10)
    first = await fetched(dispatch_id, addr)
    assert first.status == "COMPLETED" and first.result == 2  # the pending dispatch itself ran
    await asyncio.to_thread(ct.stop_triggers, dispatch_id, addr)
    [info] = await triggers_of(dispatcher, dispatch_id)
    assert info["active"] is False and info["reason"] == "stopped"
    assert len(info["new_dispatch_ids"]) == info["fire_count"] - 1
    observed = dispatcher.app[TRIGGERS].supervisor.observed[info["trigger_id"]]
    assert observed.task.done()  # nothing is left that could fire
    assert await dispatch_count(dispatcher) == info["fire_count"]
    for new_id in info["new_dispatch_ids"]:
        r = await fetched(new_id, addr)
        assert r.result == 2


async def _fired(client, dispatch_id: str, n: int) -> bool:
    infos = await triggers_of(client, dispatch_id)
    return bool(infos) and infos[0]["fire_count"] >= n


async def test_lattice_triggers_are_registered_by_dispatch(dispatcher, addr) -> None:
    @ct.lattice(triggers=[TimeTrigger(time_gap=0.05)])
    def timed(x):
        return add(x, 10)

    dispatch_id = await asyncio.to_thread(ct.dispatch(timed, dispatcher_addr=addr), 1)
    result = await asyncio.wait_for(fetched(dispatch_id, addr), 10)
    assert result.result == 11
    await asyncio.to_thread(ct.stop_triggers, [dispatch_id], addr)
    [info] = await triggers_of(dispatcher, dispatch_id)
    assert info["name"] == "TimeTrigger" and not info["active"]


async def test_a_redispatch_of_a_triggered_lattice_runs_and_registers_no_trigger(
        dispatcher, addr) -> None:
    @ct.lattice(triggers=[TimeTrigger(time_gap=3600)])
    def hourly(x):
        return add(x, 10)

    dispatch_id = await asyncio.to_thread(ct.dispatch(hourly, dispatcher_addr=addr), 1)
    again = await asyncio.to_thread(ct.redispatch(dispatch_id, dispatcher_addr=addr), 2)
    result = await asyncio.wait_for(fetched(again, addr), 10)  # stayed NEW_OBJECT
    assert (result.status, result.result) == ("COMPLETED", 12)
    body = await (await dispatcher.get("/api/v1/triggers")).json()
    assert [t["dispatch_id"] for t in body["triggers"]] == [dispatch_id]  # was two
    await asyncio.to_thread(ct.stop_triggers, dispatch_id, addr)


async def test_a_dispatch_an_active_trigger_runs_again_is_not_purged_or_deleted(
        dispatcher, addr) -> None:
    from covalent import api

    cfg = api.client_config(addr)
    dispatch_id = await asyncio.to_thread(ct.dispatch(wf, dispatcher_addr=addr), 1)
    assert (await asyncio.wait_for(fetched(dispatch_id, addr), 10)).status == "COMPLETED"
    trigger = TimeTrigger(time_gap=3600, dispatcher_addr=addr)  # runs it again every hour
    trigger.lattice_dispatch_id = dispatch_id
    await asyncio.to_thread(trigger.register)
    out = await asyncio.to_thread(api.request_json, cfg, "DELETE", "/dispatches",
                                  query={"older_than": "0s"})
    assert out["dispatch_ids"] == []  # a weekly purge stopped the trigger for good
    with pytest.raises(ct.errors.DispatchStateError, match="has active triggers.*stop_triggers"):
        await asyncio.to_thread(api.request_json, cfg, "DELETE", f"/dispatches/{dispatch_id}")
    [info] = await triggers_of(dispatcher, dispatch_id)
    assert info["active"]

    await asyncio.to_thread(ct.stop_triggers, dispatch_id, addr)
    out = await asyncio.to_thread(api.request_json, cfg, "DELETE", "/dispatches",
                                  query={"older_than": "0s"})
    assert out["dispatch_ids"] == [dispatch_id]


async def test_dir_trigger_burst_fires_once_per_batch(dispatcher, addr, tmp_path) -> None:
    watched = tmp_path / "watched"
    watched.mkdir()
    dispatch_id = await pending(addr)
    trigger = DirTrigger(watched, ["created"], batch_size=100, dispatcher_addr=addr)
    trigger.lattice_dispatch_id = dispatch_id
    await asyncio.to_thread(trigger.register)
    for i in range(1000):
        (watched / f"f{i}").touch()
    await wait_until(lambda: _fired(dispatcher, dispatch_id, 10), timeout=20)
    [info] = await triggers_of(dispatcher, dispatch_id)
    assert info["fire_count"] == 10 and info["trigger"]["n_changes"] == 0
    assert await dispatch_count(dispatcher) == 10
    await asyncio.to_thread(ct.stop_triggers, dispatch_id, addr)


async def test_dir_trigger_recursive(dispatcher, addr, tmp_path) -> None:
    (tmp_path / "w" / "sub").mkdir(parents=True)
    dispatch_id = await pending(addr)
    trigger = DirTrigger(tmp_path / "w", "created", recursive=True, lattice_dispatch_id=dispatch_id,
                         dispatcher_addr=addr)
    await asyncio.to_thread(trigger.register)
    (tmp_path / "w" / "sub" / "deep.txt").touch()
    await wait_until(lambda: _fired(dispatcher, dispatch_id, 1), timeout=10)


async def _fire_count(client, dispatch_id: str) -> int:
    return (await triggers_of(client, dispatch_id))[0]["fire_count"]


async def test_dir_trigger_follows_a_replaced_directory(dispatcher, addr, tmp_path) -> None:
    watched = tmp_path / "d"
    watched.mkdir()
    dispatch_id = await pending(addr)
    trigger = DirTrigger(watched, ["created"], lattice_dispatch_id=dispatch_id, dispatcher_addr=addr)
    await asyncio.to_thread(trigger.register)
    watched.rename(tmp_path / "d.old")  # mv d d.old; mkdir d
    watched.mkdir()
    (tmp_path / "d.old" / "stale.txt").touch()  # the old directory: must not count
    (watched / "new.txt").touch()
    await wait_until(lambda: _fired(dispatcher, dispatch_id, 1), timeout=10)
    (watched / "barrier.txt").touch()  # events arrive in order: after this one, none is pending
    await wait_until(lambda: _fired(dispatcher, dispatch_id, 2), timeout=10)
    assert await _fire_count(dispatcher, dispatch_id) == 2
    shutil.rmtree(watched)  # deleted, then created again: followed too
    watched.mkdir()
    (watched / "again.txt").touch()
    await wait_until(lambda: _fired(dispatcher, dispatch_id, 3), timeout=10)
    [info] = await triggers_of(dispatcher, dispatch_id)
    # Known: about once in 15 runs on a loaded machine, a file that arrives while the deleted
    # directory is re-created (its inode reused) is counted twice; never zero times.
    assert info["active"] and info["fire_count"] in (3, 4)
    await asyncio.to_thread(ct.stop_triggers, dispatch_id, addr)


async def test_dir_trigger_stops_when_its_parent_disappears(dispatcher, addr, tmp_path) -> None:
    watched = tmp_path / "parent" / "gone"
    watched.mkdir(parents=True)
    dispatch_id = await pending(addr)
    trigger = DirTrigger(watched, ["created"], lattice_dispatch_id=dispatch_id, dispatcher_addr=addr)
    await asyncio.to_thread(trigger.register)
    shutil.rmtree(tmp_path / "parent")

    async def stopped() -> bool:
        infos = await triggers_of(dispatcher, dispatch_id)
        return not infos[0]["active"]

    await wait_until(stopped, timeout=15)
    [info] = await triggers_of(dispatcher, dispatch_id)
    assert str(watched) in info["reason"] and "deleted" in info["reason"]
    assert (await dispatcher.get("/api/v1/health")).status == 200


async def test_a_dir_trigger_that_cannot_watch_is_refused(dispatcher, addr, tmp_path) -> None:
    dispatch_id = await pending(addr)
    trigger = DirTrigger(tmp_path / "never-made", ["created"], lattice_dispatch_id=dispatch_id,
                         dispatcher_addr=addr)
    with pytest.raises(ct.errors.InvalidRequestError, match="does not exist"):
        await asyncio.to_thread(trigger.register)
    assert await triggers_of(dispatcher, dispatch_id) == []  # nothing left half-registered


async def test_a_dispatch_whose_trigger_is_refused_leaves_nothing_behind(dispatcher, addr,
                                                                          tmp_path) -> None:
    # Covalent's triggers page: a DirTrigger on a directory that is not there. ct.dispatch
    # raised, yet a NEW_OBJECT dispatch whose id nobody got stayed in the list for good.
    @ct.lattice(triggers=[TimeTrigger(time_gap=3600),
                          DirTrigger(str(tmp_path / "never-made"), ["modified"])])
    def watched():
        return 1

    before = await dispatch_count(dispatcher)
    with pytest.raises(ct.errors.InvalidRequestError) as refused:
        await asyncio.to_thread(ct.dispatch(watched, dispatcher_addr=addr))
    said = str(refused.value)
    assert "does not exist" in said and said.count("cannot observe") == 1, said
    assert await dispatch_count(dispatcher) == before
    body = await (await dispatcher.get("/api/v1/triggers")).json()
    assert body["triggers"] == []  # the first one, registered, went with its dispatch


class EveryTick(BaseTrigger):
    """A custom trigger whose observe() blocks, as Covalent's TimeTrigger does."""

    def observe(self) -> None:
        while not self.stop_flag.wait(0.05):
            self.trigger()

    def stop(self) -> None:
        self.stop_flag.set()


async def test_custom_blocking_trigger_runs_in_a_thread(dispatcher, addr) -> None:
    dispatch_id = await pending(addr)
    trigger = EveryTick(lattice_dispatch_id=dispatch_id, dispatcher_addr=addr)
    await asyncio.to_thread(trigger.register)
    await wait_until(lambda: _fired(dispatcher, dispatch_id, 2), timeout=10)
    assert (await dispatcher.get("/api/v1/health")).status == 200  # the loop is not blocked
    await asyncio.to_thread(ct.stop_triggers, dispatch_id, addr)
    [info] = await triggers_of(dispatcher, dispatch_id)
    assert info["name"] == "EveryTick" and not info["active"]
    assert not [t for t in threading.enumerate() if "EveryTick" in t.name]  # not in the server


async def test_stop_triggers_of_unknown_dispatch_is_a_clear_error(addr) -> None:
    with pytest.raises(DispatchNotFoundError):
        await asyncio.to_thread(ct.stop_triggers, "00000000-0000-4000-8000-000000000000", addr)


class _Restartable:
    """An in-process server on a data dir of its own, started again by ``restart``, and a
    directory to watch."""

    def __init__(self, aiohttp_client, tmp_path: Path) -> None:
        self.aiohttp_client = aiohttp_client
        self.settings = in_process_settings(tmp_path / "data")
        self.watched = tmp_path / "watched"
        self.watched.mkdir()

    async def start(self):
        return await self.aiohttp_client(create_app(self.settings))

    async def restart(self, client):
        await client.close()
        return await self.start()


async def test_triggers_survive_a_restart(config_dir, aiohttp_client, tmp_path) -> None:
    server = _Restartable(aiohttp_client, tmp_path)
    watched, client = server.watched, await server.start()
    addr = f"127.0.0.1:{client.port}"
    kept = await pending(addr)
    dropped = await pending(addr)
    for dispatch_id in (kept, dropped):
        t = DirTrigger(watched, ["created"], lattice_dispatch_id=dispatch_id, dispatcher_addr=addr)
        await asyncio.to_thread(t.register)
    await asyncio.to_thread(ct.stop_triggers, dropped, addr)

    client = await server.restart(client)
    status = await (await client.get("/api/v1/status")).json()
    assert [t["dispatch_id"] for t in status["triggers"]] == [kept]
    (watched / "new.txt").touch()
    await wait_until(lambda: _fired(client, kept, 1), timeout=10)
    [info] = await triggers_of(client, dropped)
    assert not info["active"] and info["fire_count"] == 0
    await client.post("/api/v1/triggers/stop", json={"dispatch_ids": [kept]})


async def test_a_batch_counted_before_a_restart_fires_after_it(config_dir, aiohttp_client,
                                                                 tmp_path) -> None:
    # batch_size=3: two files before the restart, the third after it fires (the count was
    # lost: the third file started the batch again and nothing ran)
    server = _Restartable(aiohttp_client, tmp_path)
    watched, client = server.watched, await server.start()
    addr = f"127.0.0.1:{client.port}"
    dispatch_id = await pending(addr)
    t = DirTrigger(watched, ["created"], batch_size=3, lattice_dispatch_id=dispatch_id,
                   dispatcher_addr=addr)
    await asyncio.to_thread(t.register)
    for name in ("1", "2"):
        (watched / name).touch()

    async def counted() -> bool:
        [info] = await triggers_of(client, dispatch_id)
        return bool(info["trigger"]["n_changes"] == 2)

    await wait_until(counted, timeout=10)

    client = await server.restart(client)
    [info] = await triggers_of(client, dispatch_id)
    assert info["active"] and info["trigger"]["n_changes"] == 2 and info["fire_count"] == 0
    (watched / "3").touch()
    await wait_until(lambda: _fired(client, dispatch_id, 1), timeout=10)
    await client.post("/api/v1/triggers/stop", json={"dispatch_ids": [dispatch_id]})


async def test_a_dir_trigger_whose_directory_is_missing_at_a_restart_waits_for_it(
        config_dir, aiohttp_client, tmp_path) -> None:
    # A tmp dir cleaned or a mount not up yet while the server was down: the trigger was
    # switched off for good ("cannot observe: FileNotFoundError"), even once the path came back.
    server = _Restartable(aiohttp_client, tmp_path)
    watched, client = server.watched, await server.start()
    deep = tmp_path / "mount" / "inbox"  # the directory holding it goes too
    deep.mkdir(parents=True)
    addr = f"127.0.0.1:{client.port}"
    ids = [await pending(addr), await pending(addr)]
    for dispatch_id, path in zip(ids, (watched, deep)):
        t = DirTrigger(path, ["created"], lattice_dispatch_id=dispatch_id, dispatcher_addr=addr)
        await asyncio.to_thread(t.register)
    await client.close()
    watched.rmdir()
    shutil.rmtree(tmp_path / "mount")
    client = await server.start()
    for dispatch_id, path in zip(ids, (watched, deep)):
        [info] = await triggers_of(client, dispatch_id)
        assert info["active"] and info["reason"] == ""
        awaited = path.parent if path == deep else path
        assert info["last_error"].startswith(f"waiting for {awaited}")
    watched.mkdir()
    deep.mkdir(parents=True)
    (watched / "after.txt").touch()
    (deep / "after.txt").touch()
    for dispatch_id in ids:
        await wait_until(lambda: _fired(client, dispatch_id, 1), timeout=10)
        [info] = await triggers_of(client, dispatch_id)
        assert info["active"] and info["fire_count"] == 1 and info["last_error"] is None
    await client.post("/api/v1/triggers/stop", json={"dispatch_ids": ids})


async def test_events_received_before_a_stop_fire_after_the_restart(config_dir, aiohttp_client,
                                                                     tmp_path) -> None:
    # 200 files then `covalent stop` at once: the events queued but not yet counted were
    # dropped (113-144 fires of 200).
    server = _Restartable(aiohttp_client, tmp_path)
    watched, client = server.watched, await server.start()
    addr = f"127.0.0.1:{client.port}"
    dispatch_id = await pending(addr)
    t = DirTrigger(watched, ["created"], lattice_dispatch_id=dispatch_id, dispatcher_addr=addr)
    await asyncio.to_thread(t.register)
    for i in range(40):
        (watched / f"c{i}").touch()
    client = await server.restart(client)
    await wait_until(lambda: _fired(client, dispatch_id, 40), timeout=20)
    [info] = await triggers_of(client, dispatch_id)
    assert info["fire_count"] == 40 and info["trigger"]["n_changes"] == 0
    await client.post("/api/v1/triggers/stop", json={"dispatch_ids": [dispatch_id]})


async def test_a_dir_triggers_count_is_saved_soon_after_it_changes(dispatcher, addr,
                                                                    tmp_path) -> None:
    # Saved only at a fire or a graceful stop, a count the API showed was lost by a kill -9.
    dispatch_id = await pending(addr)
    t = DirTrigger(tmp_path, ["created"], batch_size=3, lattice_dispatch_id=dispatch_id,
                   dispatcher_addr=addr)
    await asyncio.to_thread(t.register)
    for name in ("1", "2"):
        (tmp_path / name).touch()

    async def stored_count() -> bool:
        rows = await dispatcher.app[STORE].all_triggers()
        return [r.spec.get("n_changes") for r in rows if r.dispatch_id == dispatch_id] == [2]

    await wait_until(stored_count, timeout=3)
    await asyncio.to_thread(ct.stop_triggers, dispatch_id, addr)


def _inotify_instances() -> int:
    """inotify instances this process holds (the in-process server's)."""
    count = 0
    for fd in Path("/proc/self/fd").iterdir():
        try:
            count += fd.readlink().as_posix() == "anon_inode:inotify"
        except OSError:
            continue
    return count


@pytest.mark.slow
async def test_two_hundred_dir_triggers_all_observe_on_one_inotify_instance(
        dispatcher, addr, tmp_path) -> None:
    before = _inotify_instances()
    dispatch_id = await pending(addr)
    dirs = [tmp_path / f"w{i}" for i in range(200)]

    def register_all() -> None:
        for d in dirs:
            d.mkdir()
            DirTrigger(d, ["created"], lattice_dispatch_id=dispatch_id, dispatcher_addr=addr).register()

    await asyncio.to_thread(register_all)
    infos = await triggers_of(dispatcher, dispatch_id)
    assert len(infos) == 200 and all(i["active"] for i in infos)
    assert _inotify_instances() - before <= 1  # one for all, whatever the number of triggers
    (dirs[-1] / "f").touch()
    (dirs[0] / "f").touch()
    await wait_until(lambda: _fired(dispatcher, dispatch_id, 1), timeout=10)

    async def total_fires() -> int:
        return sum(i["fire_count"] for i in await triggers_of(dispatcher, dispatch_id))

    await wait_until(lambda: _total_at_least(total_fires, 2), timeout=10)
    await asyncio.to_thread(ct.stop_triggers, dispatch_id, addr)


async def _total_at_least(total, n: int) -> bool:
    return await total() >= n


async def test_the_users_trigger_object_lists_the_dispatches_it_started(dispatcher, addr) -> None:
    # Covalent's how-to pattern: @ct.lattice(triggers=...) over @ct.electron; the object the
    # user holds fills new_dispatch_ids from the dispatcher (#12 items 2 and 9).
    trigger = TimeTrigger(time_gap=0.05)

    @ct.lattice(triggers=trigger)
    @ct.electron
    def answer():
        return 42

    dispatch_id = await asyncio.to_thread(ct.dispatch(answer, dispatcher_addr=addr))
    assert trigger.lattice_dispatch_id == dispatch_id
    await wait_until(lambda: _fired(dispatcher, dispatch_id, 3), timeout=10)
    await asyncio.to_thread(ct.stop_triggers, dispatch_id, addr)
    [info] = await triggers_of(dispatcher, dispatch_id)
    ids = await asyncio.to_thread(lambda: trigger.new_dispatch_ids)
    assert ids == info["new_dispatch_ids"] and len(ids) == info["fire_count"] - 1 >= 2
    for new_id in ids:
        assert (await fetched(new_id, addr)).result == 42
    assert (await fetched(dispatch_id, addr)).result == 42  # the pending one ran first


async def test_a_registered_trigger_object_follows_its_fires(dispatcher, addr) -> None:
    dispatch_id = await pending(addr)
    trigger = TimeTrigger(time_gap=0.05, dispatcher_addr=addr)
    assert trigger.new_dispatch_ids == []
    trigger.lattice_dispatch_id = dispatch_id
    await asyncio.to_thread(trigger.register)
    await wait_until(lambda: _fired(dispatcher, dispatch_id, 2), timeout=10)
    await asyncio.to_thread(ct.stop_triggers, dispatch_id, addr)
    [info] = await triggers_of(dispatcher, dispatch_id)
    assert await asyncio.to_thread(lambda: trigger.new_dispatch_ids) == info["new_dispatch_ids"]
    assert len(info["new_dispatch_ids"]) >= 1
    missing = await dispatcher.get("/api/v1/triggers/no-such-trigger")
    assert missing.status == 404 and (await missing.json())["error"] == "TriggerNotFound"


async def test_stop_on_a_registered_trigger_object_stops_it_on_the_dispatcher(dispatcher, addr,
                                                                             tmp_path) -> None:
    # trigger.stop() ("Stop observing for changes") did nothing: the dispatcher kept firing.
    dispatch_id = await pending(addr)
    timer = TimeTrigger(time_gap=0.05, lattice_dispatch_id=dispatch_id, dispatcher_addr=addr)
    files = DirTrigger(tmp_path, ["created"], lattice_dispatch_id=dispatch_id, dispatcher_addr=addr)
    for t in (timer, files):
        await asyncio.to_thread(t.register)
    await wait_until(lambda: _fired(dispatcher, dispatch_id, 1), timeout=10)
    await asyncio.to_thread(timer.stop)
    by_name = {i["name"]: i for i in await triggers_of(dispatcher, dispatch_id)}
    assert not by_name["TimeTrigger"]["active"] and by_name["TimeTrigger"]["reason"] == "stopped"
    assert by_name["DirTrigger"]["active"]  # only the one stopped, not its dispatch's others
    observed = dispatcher.app[TRIGGERS].supervisor.observed
    assert observed[by_name["TimeTrigger"]["trigger_id"]].task.done()  # nothing left to fire
    ids = await asyncio.to_thread(lambda: timer.new_dispatch_ids)  # still read from the server
    assert ids == by_name["TimeTrigger"]["new_dispatch_ids"]
    await asyncio.to_thread(timer.stop)  # a second stop() does nothing
    await asyncio.to_thread(ct.stop_triggers, dispatch_id, addr)

    # stop() never raised before it reached the dispatcher, and still does not: a trigger gone
    # with its dispatch is stopped; a dispatcher away is warned about (and asked again next time)
    from covalent import api

    await asyncio.to_thread(api.request_json, api.client_config(addr), "DELETE",
                            f"/dispatches/{dispatch_id}")
    files.__dict__.pop("_stopped_registered", None)
    await asyncio.to_thread(files.stop)  # its trigger row went with the dispatch: no error
    files._registered = ("127.0.0.1:1", "gone")  # nothing listens there
    files.__dict__.pop("_stopped_registered", None)
    with pytest.warns(UserWarning, match="stopped here but not on the dispatcher"):
        await asyncio.to_thread(files.stop)


async def _dir_trigger_on(addr: str, path: Path) -> str:
    """A pending dispatch with one DirTrigger (on ``created``) watching ``path``."""
    dispatch_id = await pending(addr)
    trigger = DirTrigger(path, ["created"], lattice_dispatch_id=dispatch_id, dispatcher_addr=addr)
    await asyncio.to_thread(trigger.register)
    return dispatch_id


async def _fires_exactly(client, dispatch_id: str, path: Path, n: int) -> None:
    """Wait for ``n`` fires, then check a barrier file brings the (n+1)th and nothing more."""
    await wait_until(lambda: _fired(client, dispatch_id, n), timeout=10)
    (path / f"barrier{n}").touch()  # events arrive in order: after this one, none is pending
    await wait_until(lambda: _fired(client, dispatch_id, n + 1), timeout=10)
    assert await _fire_count(client, dispatch_id) == n + 1


async def test_stopping_one_dir_trigger_leaves_another_on_the_same_directory_firing(
        dispatcher, addr, tmp_path) -> None:
    # The dispatcher watches every directory through one watchdog observer; stopping one
    # trigger unscheduled the watch that a second trigger on the same path shared.
    watched = tmp_path / "shared"
    watched.mkdir()
    kept, stopped = await _dir_trigger_on(addr, watched), await _dir_trigger_on(addr, watched)
    await asyncio.to_thread(ct.stop_triggers, stopped, addr)
    for i in range(3):
        (watched / f"f{i}").touch()
    await _fires_exactly(dispatcher, kept, watched, 3)
    [info] = await triggers_of(dispatcher, stopped)
    assert not info["active"] and info["fire_count"] == 0
    await asyncio.to_thread(ct.stop_triggers, kept, addr)


async def test_stopping_one_dir_trigger_leaves_one_on_a_sibling_directory_firing(
        dispatcher, addr, tmp_path) -> None:
    # Each DirTrigger also watches its directory's parent (to follow a replaced directory).
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    kept = await _dir_trigger_on(addr, tmp_path / "a")
    stopped = await _dir_trigger_on(addr, tmp_path / "b")
    [info] = await triggers_of(dispatcher, stopped)
    resp = await dispatcher.post(f"/api/v1/triggers/{info['trigger_id']}/stop", json={})
    assert resp.status == 200, await resp.text()
    shutil.rmtree(tmp_path / "a")  # replaced: followed only while the parent is watched
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "new.txt").touch()
    await _fires_exactly(dispatcher, kept, tmp_path / "a", 1)
    await asyncio.to_thread(ct.stop_triggers, kept, addr)


@pytest.mark.parametrize("replace", ["rm -r d; mkdir d", "mv d d.old; mkdir d"])
async def test_two_dir_triggers_on_one_directory_both_follow_it_when_it_is_replaced(
        dispatcher, addr, tmp_path, replace) -> None:
    watched = tmp_path / "d"
    watched.mkdir()
    first, second = await _dir_trigger_on(addr, watched), await _dir_trigger_on(addr, watched)
    if replace.startswith("rm"):
        shutil.rmtree(watched)
    else:
        watched.rename(tmp_path / "d.old")
    watched.mkdir()
    (watched / "again.txt").touch()
    for dispatch_id in (first, second):
        await wait_until(lambda: _fired(dispatcher, dispatch_id, 1), timeout=10)
    await asyncio.to_thread(ct.stop_triggers, first, addr)
    (watched / "after-stop.txt").touch()
    await wait_until(lambda: _fired(dispatcher, second, 2), timeout=10)
    for dispatch_id in (first, second):
        [info] = await triggers_of(dispatcher, dispatch_id)
        assert info["active"] is (dispatch_id == second)
    await asyncio.to_thread(ct.stop_triggers, second, addr)
