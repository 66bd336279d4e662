"""The REST API answers bad input with a 4xx JSON error and keeps serving."""

from __future__ import annotations

import io
import json

import pytest
from aiohttp.test_utils import TestClient

from covalent import wire
from dispatcher.keys import SETTINGS
from tests.conftest import JSON
from tests.conftest import run
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
    ("GET", f"/dispatches/{UNKNOWN}/nodes/x", (400, "InvalidRequest")),
    ("POST", f"/dispatches/{UNKNOWN}/cancel", (404, "DispatchNotFound")),
    ("POST", f"/dispatches/{UNKNOWN}/start", (404, "DispatchNotFound")),
    ("GET", "/no-such-endpoint", (404, "NotFound")),
])
async def test_unknown_ids_and_bad_parameters(dispatcher: TestClient, method, path, expected) -> None:
    resp = await dispatcher.request(method, wire.API + path, headers=JSON)
    assert await error_of(resp) == expected


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
