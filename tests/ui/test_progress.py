"""``ct.get_result(id, wait=True, progress=True)`` and the progress endpoint it reads."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp.test_utils import TestClient

import covalent as ct
from tests import tasks
from tests.conftest import auth_headers


@ct.lattice
def fan(n):
    return tasks.identity([tasks.add(i, 1) for i in range(n)])


async def test_get_result_shows_progress_only_when_asked(addr: str, capfd: pytest.CaptureFixture[str]) -> None:
    dispatch_id = await asyncio.to_thread(ct.dispatch(fan, dispatcher_addr=addr), 3)
    quiet = await asyncio.to_thread(ct.get_result, dispatch_id, True, addr)
    assert quiet.result == [1, 2, 3] and capfd.readouterr().err == ""  # silent by default
    shown = await asyncio.to_thread(lambda: ct.get_result(dispatch_id, wait=True, dispatcher_addr=addr,
                                                          progress=True))
    assert shown.result == [1, 2, 3]
    err = capfd.readouterr().err  # not a terminal: plain lines
    assert "add: 3/3 completed" in err and "identity: 1/1 completed" in err
    assert f"fan {dispatch_id}: COMPLETED" in err


async def test_progress_long_poll_answers_on_the_commit(dispatcher: TestClient, addr: str) -> None:
    dispatch_id = await asyncio.to_thread(ct.dispatch(tasks.two_node, dispatcher_addr=addr), 1, 2)
    await asyncio.to_thread(ct.get_result, dispatch_id, True, addr)
    path = f"/api/v1/dispatches/{dispatch_id}/progress"
    body = await (await dispatcher.get(path, headers=auth_headers())).json()
    assert body["status"] == "COMPLETED"
    assert [(e["name"], e["completed"], e["total"]) for e in body["electrons"]] == [
        ("add", 1, 1), ("multiply", 1, 1)]
    # An ended dispatch is never waited on.
    quick = await asyncio.wait_for(dispatcher.get(path + f"?since={body['version']}&wait=30"), 5)
    assert (await quick.json())["status"] == "COMPLETED"
    missing = await dispatcher.get("/api/v1/dispatches/00000000-0000-4000-8000-000000000000/progress")
    assert missing.status == 404 and (await missing.json())["error"] == "DispatchNotFound"


async def test_progress_wakes_a_waiting_client_when_a_node_completes(dispatcher: TestClient, addr: str) -> None:
    @ct.lattice
    def gate(x):
        return tasks.add(tasks.block(x), 1)

    dispatch_id = await asyncio.to_thread(ct.dispatch(gate, dispatcher_addr=addr), 1)
    path = f"/api/v1/dispatches/{dispatch_id}/progress"
    body = await (await dispatcher.get(path)).json()
    assert body["status"] == "RUNNING"
    waiting = asyncio.ensure_future(dispatcher.get(path + f"?since={body['version']}&wait=20"))
    tasks.release.set()  # before or after the request arrives, a commit answers it
    answer = await asyncio.wait_for(waiting, 5)  # long before the 20 s wait
    new = await answer.json()
    assert new["version"] != body["version"] or new["status"] == "COMPLETED"
