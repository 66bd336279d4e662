"""Every route of the dispatcher, as the owner, as another user, as a revoked user and with no
token (issue #26): nobody but the owner (or an admin) learns anything of a user's dispatch.

The routes are read from the app itself (``app.router.routes()``): a route added later is
called here too, and one that answers another user with the owner's data fails. Someone
else's dispatch, trigger or preview answers exactly as an id nobody has: the same status and
the same body (the id the caller sent may come back, as it does for an unknown id).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import pytest
from aiohttp import web

import covalent as ct
from covalent import wire
from covalent.api import build_submission
from covalent.errors import DispatchNotFoundError
from covalent.triggers import TimeTrigger
from dispatcher.users import RECHECK_S
from tests import tasks
from tests.conftest import run, wait_until
from tests.team import ALICE_WORKFLOW, Team, alices_secret_workflow, team  # noqa: F401

pytestmark = pytest.mark.all_stores  # owners are SQL in both databases

ADMIN_ONLY = {("GET", "/logs"), ("GET", "/metrics"), ("GET", wire.API + "/users"),
              ("POST", wire.API + "/users"), ("POST", wire.API + "/users/{name}/revoke")}
# Calls that change or remove the owner's things: the owner makes them last.
LAST = re.compile(r"^(DELETE|POST .*/(cancel|stop|delete))")
BODIES: dict[tuple[str, str], Any] = {
    ("POST", wire.API + "/dispatches/{dispatch_id}/outputs"): {"nodes": [0]},
    ("POST", wire.API + "/dispatches/{dispatch_id}/cancel"): {"task_ids": []},
    ("POST", wire.API + "/users"): {"name": "eve"},
    ("POST", wire.API + "/previews"): {"name": "p", "graph": {"nodes": [], "edges": []}},
}


def names_theirs(method: str, template: str) -> bool:
    """A call that names the owner's dispatch, trigger or preview: another user gets 404."""
    return re.search(r"{(dispatch_id|trigger_id|preview_id|prefix)", template) is not None or (
        method == "POST" and template.removeprefix(wire.API) in ("/dispatches", "/triggers",
                                                                 "/triggers/stop"))


def routes(app: web.Application) -> list[tuple[str, str]]:
    """(method, path template) of every route (HEAD runs GET's handler: left out)."""
    out = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        template = info.get("formatter") or info.get("path") or info.get("prefix")
        assert template, f"a route this test cannot address: {route!r}"
        if route.method != "HEAD":
            out.append((route.method, str(template)))
    # the triggers' stops first of the last: a dispatch an active trigger runs again is not
    # deleted (409)
    return sorted(set(out), key=lambda r: (bool(LAST.match(" ".join(r))),
                                           not r[1].endswith("/stop"), r))


def address(template: str, ids: dict[str, str]) -> str:
    """The template with the owner's ids (or unknown ones) filled in."""
    if template == "/static":
        return "/static/ui.css"
    fills = {"dispatch_id": ids["dispatch"], "trigger_id": ids["trigger"],
             "preview_id": ids["preview"], "prefix": ids["dispatch"][:8], "node_id": "0",
             "part": "inputs", "name": "carol"}
    names = re.findall(r"{(\w+)", template)
    missing = [n for n in names if n not in fills]
    assert not missing, f"{template}: tell this test how to fill {missing}"
    return re.sub(r"{(\w+)[^}]*}", lambda m: fills[m.group(1)], template)


def request_of(team: Team, method: str, template: str, ids: dict[str, str]
               ) -> tuple[str, dict[str, str], bytes | None]:
    """(address with query, extra headers, body) of one call."""
    path = address(template, ids)
    if (method, template) == ("POST", wire.API + "/dispatches"):  # run the dispatch again
        frame = build_submission(alices_secret_workflow, (1,), {}, dispatch_id=str(uuid.uuid4()),
                                 disable_run=True)
        return path + f"?redispatch_of={ids['dispatch']}", {"Content-Type": wire.CONTENT_TYPE}, frame
    query = {("GET", "/ui/events"): f"?ids={ids['dispatch']}",
             ("DELETE", wire.API + "/dispatches"): "?all=1"}.get((method, template), "")
    body = BODIES.get((method, template))
    if template == wire.API + "/triggers" and method == "POST":
        body = {"trigger": {"name": "TimeTrigger", "time_gap": 3600,
                            "lattice_dispatch_id": ids["dispatch"]}}
    elif template.endswith(("/triggers/stop", "/listing/delete")):
        body = {"dispatch_ids": [ids["dispatch"]]}
    if method in ("POST", "DELETE"):
        return path + query, {"Content-Type": "application/json"}, wire.pieces.dumps(body or {}).encode()
    return path + query, {}, None


async def call(team: Team, who: str | None, method: str, template: str,
               ids: dict[str, str]) -> tuple[int, str]:
    path, headers, body = request_of(team, method, template, ids)
    async with team.client.request(method, path, data=body,
                                   headers={**team.headers(who), **headers}) as resp:
        if resp.content_type == "text/event-stream":  # read what it sends at once, then go
            try:
                text = (await asyncio.wait_for(resp.content.readany(), 0.5)).decode()
            except TimeoutError:
                text = ""
        else:  # frames and pickles too: bytes as characters, to search them
            text = (await resp.read()).decode("latin-1")
        return resp.status, text


async def test_every_route_keeps_a_users_dispatch_to_its_owner(team: Team) -> None:
    theirs = {"dispatch": team.dispatch_id, "trigger": team.trigger_id, "preview": team.preview_id}
    unknown = {"dispatch": str(uuid.uuid4()), "trigger": str(uuid.uuid4()),
               "preview": str(uuid.uuid4())}
    every = routes(team.client.app)
    assert len(every) > 40 and ("GET", "/dispatches/{dispatch_id}") in every

    for method, template in every:
        where = f"{method} {template}"
        for who in ("carol", None):  # revoked, no token: nothing at all
            status, text = await call(team, who, method, template, theirs)
            assert status == 401, (where, who, status, text[:300])
            assert team.dispatch_id not in text and ALICE_WORKFLOW not in text, (where, who)
        status, text = await call(team, "bob", method, template, theirs)
        assert ALICE_WORKFLOW not in text, (where, text[:300])
        if (method, template) in ADMIN_ONLY:
            assert status == 403, (where, status, text[:300])
        elif status == 404:  # as for an id nobody has, to the letter
            status_u, text_u = await call(team, "bob", method, template, unknown)
            assert (status_u, _masked(text_u, unknown)) == (status, _masked(text, theirs)), where
        else:
            assert not names_theirs(method, template), (where, status, text[:300])
            assert status < 300, (where, status, text[:300])
            assert team.dispatch_id not in text and team.trigger_id not in text, (where, text[:300])

    # Nothing bob, carol or nobody sent changed alice's dispatch or trigger.
    assert (await team.call("admin", "GET", f"{wire.API}/dispatches/{team.dispatch_id}/status")
            )["status"] == "COMPLETED"
    assert (await team.call("admin", "GET", f"{wire.API}/triggers/{team.trigger_id}"))["active"]
    listed = await team.call("admin", "GET", wire.API + "/listing")
    assert [(d["dispatch_id"], d["owner"]) for d in listed["dispatches"]] == [
        (team.dispatch_id, "alice")]  # bob's redispatch of it was refused

    for method, template in every:  # the owner: everything but the admins' pages
        status, text = await call(team, "alice", method, template, theirs)
        if (method, template) in ADMIN_ONLY:
            assert status == 403, (method, template, status)
        elif not LAST.match(f"{method} {template}"):
            assert status < 400, (method, template, status, text[:300])
        else:  # the dispatch may be gone already (a delete before this one)
            assert status < 400 or status == 404 and "DispatchNotFound" in text, \
                (method, template, status, text[:300])


async def test_listings_show_a_user_their_own_and_an_admin_everyones(team: Team) -> None:
    for who, expected in (("alice", [team.dispatch_id]), ("bob", []),
                          ("admin", [team.dispatch_id])):
        listed = await team.call(who, "GET", wire.API + "/listing")
        assert [d["dispatch_id"] for d in listed["dispatches"]] == expected, who
        assert listed["total"] == len(expected) and sum(listed["counts"].values()) == len(expected)
        plain = await team.call(who, "GET", wire.API + "/dispatches")
        assert [d["dispatch_id"] for d in plain["dispatches"]] == expected, who
        triggers = await team.call(who, "GET", wire.API + "/triggers")
        assert [t["trigger_id"] for t in triggers["triggers"]] == (
            [team.trigger_id] if expected else []), who
    me = await team.call("bob", "GET", wire.API + "/whoami")
    assert me == {"name": "bob", "admin": False}


async def test_redispatch_and_trigger_fire_belong_to_the_owner_of_the_original(team: Team) -> None:
    again = await team.call("admin", "POST",
                            f"{wire.API}/dispatches/{team.dispatch_id}/redispatch", {})
    fired = await team.client.app[_triggers()].fire(team.dispatch_id)
    owners = await team.client.app[_store()].owners([again["dispatch_id"], fired])
    assert owners == {again["dispatch_id"]: "alice", fired: "alice"}
    mine = await team.call("alice", "GET", wire.API + "/listing")
    assert {again["dispatch_id"], fired} <= {d["dispatch_id"] for d in mine["dispatches"]}


@ct.electron
def plus_one(x: int) -> int:
    return x + 1


@ct.lattice
def alices_inner(x: int) -> int:
    return plus_one(x)


@ct.lattice
def alices_outer(x: int) -> int:
    return ct.electron(alices_inner)(x)


async def test_sublattices_and_sdk_redispatches_belong_to_the_owner(
        team: Team, monkeypatch: pytest.MonkeyPatch) -> None:
    result = await run(alices_outer, team.addr, 1)  # the fixture's env: alice's token
    assert result.result == 2
    children = [n["sub_dispatch_id"] for n in (await team.call(
        "alice", "GET", f"{wire.API}/dispatches/{result.dispatch_id}/nodes/0"),)]
    assert children[0], "the sublattice ran as a dispatch of its own"
    owners = await team.client.app[_store()].owners([result.dispatch_id, children[0]])
    assert owners == {result.dispatch_id: "alice", children[0]: "alice"}  # a worker sent it
    for who, status in (("alice", 200), ("bob", 404)):
        async with team.client.get(f"/dispatches/{children[0]}", headers=team.headers(who)) as r:
            assert r.status == status, who

    monkeypatch.setenv("COVALENT_TOKEN", team.tokens["admin"])
    again = await asyncio.to_thread(ct.redispatch(result.dispatch_id, dispatcher_addr=team.addr), 5)
    assert (await team.client.app[_store()].owners([again])) == {again: "alice"}
    monkeypatch.setenv("COVALENT_TOKEN", team.tokens["bob"])
    with pytest.raises(DispatchNotFoundError):
        await asyncio.to_thread(ct.redispatch(result.dispatch_id, dispatcher_addr=team.addr), 5)
    with pytest.raises(DispatchNotFoundError):
        await asyncio.to_thread(ct.cancel, result.dispatch_id, dispatcher_addr=team.addr)


async def test_status_shows_a_user_the_stores_kind_and_an_admin_its_path(team: Team) -> None:
    mine = (await team.call("bob", "GET", wire.API + "/status"))["store"]
    full = (await team.call("admin", "GET", wire.API + "/status"))["store"]
    assert "path" not in mine and "/" not in mine["database"] and mine["database"]
    assert full["path"] and full["database"].startswith(mine["database"])


async def test_a_revoked_token_is_refused_at_its_next_request(team: Team) -> None:
    assert (await team.call("bob", "GET", wire.API + "/whoami"))["name"] == "bob"
    await team.call("admin", "POST", wire.API + "/users/bob/revoke", {})
    async with team.client.get(wire.API + "/whoami", headers=team.headers("bob")) as resp:
        assert resp.status == 401
    users = {u["name"]: u for u in (await team.call("admin", "GET", wire.API + "/users"))["users"]}
    assert users["bob"]["revoked_at"] and users["alice"]["last_used_at"]
    assert not users["alice"]["revoked_at"] and "token" not in users["alice"]


def _masked(text: str, ids: dict[str, str]) -> str:
    for key, value in ids.items():
        text = text.replace(value, f"<{key}>").replace(value[:8], f"<{key}8>")
    return text


def _triggers() -> Any:
    from dispatcher.keys import TRIGGERS

    return TRIGGERS


def _store() -> Any:
    from dispatcher.keys import STORE

    return STORE


@ct.lattice
def _blocked(x):
    return tasks.block(x)


async def test_a_revoked_user_is_sent_nothing_more_and_their_triggers_stop(
        team: Team, monkeypatch: pytest.MonkeyPatch) -> None:
    # Before, a long poll answered bob's outputs 25 s after his revoke, his open event streams
    # went on, and his TimeTrigger kept running his workflow.
    tasks.release.clear()
    monkeypatch.setenv("COVALENT_TOKEN", team.tokens["bob"])
    running = await asyncio.to_thread(ct.dispatch(_blocked, dispatcher_addr=team.addr), 7)
    pending = await asyncio.to_thread(ct.dispatch(_blocked, dispatcher_addr=team.addr,
                                                  disable_run=True), 1)
    trigger = TimeTrigger(time_gap=0.2, lattice_dispatch_id=pending).to_dict()
    trigger_id = (await team.call("bob", "POST", wire.API + "/triggers",
                                  {"trigger": trigger}))["trigger_id"]

    async def fires() -> int:
        return int((await team.call("admin", "GET", f"{wire.API}/triggers/{trigger_id}"))
                   ["fire_count"])
    await wait_until(lambda: fires(), timeout=20)
    poll = asyncio.ensure_future(team.client.get(
        f"{wire.API}/dispatches/{running}?wait=60", headers=team.headers("bob")))
    stream = await team.client.get(f"/ui/dispatches/{running}/events", headers=team.headers("bob"))
    assert stream.status == 200
    assert (await stream.content.readline()).startswith(b"event: snapshot")

    status_poll = asyncio.ensure_future(team.client.get(
        f"{wire.API}/dispatches/{running}/status?wait=60", headers=team.headers("bob")))

    await team.call("admin", "POST", wire.API + "/users/bob/revoke", {})
    # The stream and the long polls end within a recheck, the dispatch still running (before,
    # they went on until it ended, or the long poll's limit).
    await asyncio.wait_for(stream.content.read(), RECHECK_S + 10)
    for answer in await asyncio.wait_for(asyncio.gather(poll, status_poll), RECHECK_S + 10):
        assert answer.status == 401 and "revoked" in await answer.text()
    tasks.release.set()

    async def stopped() -> dict[str, Any] | None:
        found = await team.call("admin", "GET", f"{wire.API}/triggers/{trigger_id}")
        return found if not found["active"] else None
    found = await wait_until(stopped, timeout=10)
    assert "'bob' was revoked" in (found["reason"] or found["last_error"] or "")
