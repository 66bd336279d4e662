"""The REST API answers bad input with a 4xx JSON error and keeps serving."""

from __future__ import annotations

import asyncio
import io
import json
import time

import pytest
from aiohttp.test_utils import TestClient

import covalent as ct
from covalent import wire
from dispatcher.keys import SETTINGS
from tests.conftest import JSON
from tests.conftest import run
from tests import tasks
from tests.tasks import two_node

pytestmark = pytest.mark.all_stores  # run on every store (tests/conftest.py)

FRAME = {"Content-Type": wire.CONTENT_TYPE}

UNKNOWN = "00000000-0000-4000-8000-000000000000"


async def error_of(resp) -> tuple[int, str]:
    body = await resp.json()
    assert set(body) == {"error", "message"}
    return resp.status, body["error"]


@pytest.mark.parametrize("body, reason", [
    (b"", "bad magic"),
    (b"{not json", "bad magic"),
    (wire.MAGIC + b"\x00\x00\x00\x05{}", "truncated"),
    (wire.pack({"dispatch_id": "x"}, []), "uuid4"),
    (wire.pack({"dispatch_id": UNKNOWN, "graph": {"nodes": [], "edges": []}, "inputs": 0,
                "lattice": 0}, [b""]), "no nodes"),
    (wire.pack({"dispatch_id": UNKNOWN, "graph": {"nodes": [{"id": 0, "name": "a", "kind": "bogus"}],
                                                  "edges": []}, "inputs": 0, "lattice": 0}, [b""]),
     "malformed"),
])
async def test_malformed_submissions_are_400(dispatcher: TestClient, body: bytes, reason: str) -> None:
    resp = await dispatcher.post(wire.API + "/dispatches", data=body, headers=FRAME)
    payload = await resp.json()
    assert (resp.status, payload["error"]) == (400, "InvalidRequest")
    assert reason in payload["message"]


def graph(nodes, edges):
    return {"nodes": nodes, "edges": edges}


def electron(i, fn=0):
    return {"id": i, "name": f"f{i}", "kind": "electron", "fn": fn}


@pytest.mark.parametrize("g, message", [
    (graph([electron(0), electron(1)], [[0, 1, "x", "arg", 0], [1, 0, "x", "arg", 0]]), "cycle"),
    (graph([electron(0)], [[0, 7, "x", "arg", 0]]), "does not exist"),
    (graph([electron(0, fn=9)], []), "blob 9"),
    (graph([electron(1)], []), "node ids must be"),
])
async def test_invalid_graphs_are_400_with_the_reason(dispatcher: TestClient, g, message) -> None:
    body = wire.pack({"dispatch_id": UNKNOWN, "graph": g, "inputs": 0, "lattice": 0}, [b"blob"])
    resp = await dispatcher.post(wire.API + "/dispatches", data=body, headers=FRAME)
    payload = await resp.json()
    assert resp.status == 400 and message in payload["message"]


@pytest.mark.parametrize("g, message", [
    (graph([{"id": 0, "name": "p", "kind": "parameter", "value": 0}, electron(1, fn=0)],
           [[0, 1, "x", "arg", 0]]), "also sent as a value"),
    (graph([{"id": 0, "name": "p", "kind": "parameter", "value": 1}, electron(1, fn=0)],
           [[0, 1, "x", "arg", 0]]), "blob_sizes add up"),
])
async def test_a_large_value_cannot_double_as_code_and_a_short_body_is_400(
        dispatcher: TestClient, g, message) -> None:
    big = b"v" * (2 << 20)  # written to a file as it arrives: only values may be
    body = wire.pack({"dispatch_id": UNKNOWN, "graph": g, "inputs": 0, "lattice": 0}, [big, big])
    if "add up" in message:
        body = body[:-10]
    resp = await dispatcher.post(wire.API + "/dispatches", data=io.BytesIO(body), headers=FRAME)
    payload = await resp.json()
    assert resp.status == 400 and message in payload["message"], payload
    assert list((dispatcher.app[SETTINGS].upload_dir).iterdir()) == []  # nothing left behind


@pytest.mark.parametrize("method, path, expected", [
    ("GET", f"/dispatches/{UNKNOWN}", (404, "DispatchNotFound")),
    ("GET", "/dispatches/..%2F..%2Fetc%2Fpasswd", (404, "DispatchNotFound")),
    ("GET", f"/dispatches/{UNKNOWN}/status", (404, "DispatchNotFound")),
    ("GET", f"/dispatches/{UNKNOWN}?wait=abc", (400, "InvalidRequest")),
    ("GET", f"/dispatches/{UNKNOWN}?parts=bogus", (400, "InvalidRequest")),
    ("GET", f"/dispatches/{UNKNOWN}?gathers=yaml", (400, "InvalidRequest")),
    ("GET", f"/dispatches/{UNKNOWN}/nodes/x", (400, "InvalidRequest")),
    ("POST", f"/dispatches/{UNKNOWN}/cancel", (404, "DispatchNotFound")),
    ("POST", f"/dispatches/{UNKNOWN}/start", (404, "DispatchNotFound")),
    ("GET", "/no-such-endpoint", (404, "NotFound")),
])
async def test_unknown_ids_and_bad_parameters(dispatcher: TestClient, method, path, expected) -> None:
    resp = await dispatcher.request(method, wire.API + path, headers=JSON)
    assert await error_of(resp) == expected


@ct.lattice
def gathers(x):
    parts = [tasks.identity(x), tasks.identity(x + 1)]
    return {"list": parts, "tuple": (parts[0], x), "dict": {"a": tasks.identity({"k": parts})}}


async def test_gathering_specs_come_as_json_or_as_its_text(dispatcher: TestClient, addr: str) -> None:
    """The SDK asks for the specs as text (``gathers=text``) and parses those it needs; what it
    reads is what the stored specs say, and a bad option is refused before a long-poll waits."""
    done = await run(gathers, addr, 1)
    assert done.result == {"list": [1, 2], "tuple": [1, 1], "dict": {"a": {"k": [1, 2]}}}  # as Covalent
    path = f"{wire.API}/dispatches/{done.dispatch_id}"
    as_json, _ = wire.unpack(await (await dispatcher.get(path, params={"gathers": "json"})).read())
    as_text, _ = wire.unpack(await (await dispatcher.get(path, params={"gathers": "text"})).read())
    specs = [n["gather"] for n in as_json["nodes"]]
    assert sorted(s["kind"] for s in specs if s is not None) == ["dict", "list", "postprocess"]
    assert [None if t["gather"] is None else json.loads(t["gather"]) for t in as_text["nodes"]] == specs
    assert {k: v for k, v in as_text.items() if k != "nodes"} == {
        k: v for k, v in as_json.items() if k != "nodes"}
    running = await asyncio.to_thread(ct.dispatch(tasks.two_node, dispatcher_addr=addr,
                                                  disable_run=True), 1, 2)
    started = time.monotonic()
    resp = await dispatcher.get(f"{wire.API}/dispatches/{running}",
                                params={"gathers": "yaml", "wait": "30"})
    assert await error_of(resp) == (400, "InvalidRequest")
    assert time.monotonic() - started < 10  # refused, not after the long-poll


async def test_cancel_body_must_be_json_with_integer_ids(dispatcher: TestClient, addr: str) -> None:
    done = await run(two_node, addr, 1, 2)
    path = f"{wire.API}/dispatches/{done.dispatch_id}/cancel"
    resp = await dispatcher.post(path, data=b"\xff\xfe", headers=JSON)
    assert await error_of(resp) == (400, "InvalidRequest")
    resp = await dispatcher.post(path, data=json.dumps({"task_ids": ["a"]}), headers=JSON)
    assert await error_of(resp) == (400, "InvalidRequest")
    resp = await dispatcher.post(path, data=json.dumps({"task_ids": []}), headers=JSON)
    assert await error_of(resp) == (409, "DispatchState")


async def test_node_endpoint_and_listing(dispatcher: TestClient, addr: str) -> None:
    done = await run(two_node, addr, 1, 2)
    resp = await dispatcher.get(f"{wire.API}/dispatches/{done.dispatch_id}/nodes/0")
    node = await resp.json()
    assert (node["name"], node["status"], node["has_output"]) == ("add", "COMPLETED", True)
    resp = await dispatcher.get(f"{wire.API}/dispatches/{done.dispatch_id}/nodes/99")
    assert await error_of(resp) == (404, "NodeNotFound")
    listing = await (await dispatcher.get(f"{wire.API}/dispatches?status=COMPLETED")).json()
    assert [d["dispatch_id"] for d in listing["dispatches"]] == [done.dispatch_id]


async def test_retried_submission_creates_one_dispatch(dispatcher: TestClient) -> None:
    from covalent._dispatch import build_submission

    body = build_submission(two_node, (1, 2), {}, dispatch_id=UNKNOWN, disable_run=True)
    first = await dispatcher.post(wire.API + "/dispatches", data=body, headers=FRAME)
    second = await dispatcher.post(wire.API + "/dispatches", data=body, headers=FRAME)
    assert (first.status, second.status) == (201, 200)
    assert (await second.json())["dispatch_id"] == UNKNOWN
    listing = await (await dispatcher.get(f"{wire.API}/dispatches")).json()
    assert len(listing["dispatches"]) == 1
