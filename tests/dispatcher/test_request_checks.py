"""An id means one dispatch, spelled one way (issue #21): a reused id with another workflow or
other inputs is a 409 (the first stays as it was), the same request again is a safe retry, and
an id with anything around it (a trailing newline: Python's ``$`` matches before one) is no id.
"""

from __future__ import annotations

import asyncio

import pytest
from aiohttp.test_utils import TestClient

import covalent as ct
from covalent import wire
from covalent._dispatch import build_submission
from tests.conftest import JSON
from tests.tasks import add, two_node

pytestmark = pytest.mark.all_stores  # run on every store (tests/conftest.py)

FRAME = {"Content-Type": wire.CONTENT_TYPE}
ID = "3f1c2b9e-8d7a-4c65-9b21-0e5f4a3d2c1b"


@ct.lattice
def _other(x, y):
    return add(x, y)


async def test_a_reused_id_with_another_body_is_409_and_the_first_stays(
        dispatcher: TestClient, addr: str) -> None:
    first = build_submission(two_node, (1, 2), {}, dispatch_id=ID, disable_run=False)
    resp = await dispatcher.post(wire.API + "/dispatches", data=first, headers=FRAME)
    assert resp.status == 201
    other_inputs = build_submission(two_node, (5, 6), {}, dispatch_id=ID, disable_run=False)
    other_workflow = build_submission(_other, (1, 2), {}, dispatch_id=ID, disable_run=False)
    for body in (other_inputs, other_workflow):
        resp = await dispatcher.post(wire.API + "/dispatches", data=body, headers=FRAME)
        answer = await resp.json()
        assert (resp.status, answer["error"]) == (409, "DispatchState")
        assert "taken by a different workflow" in answer["message"]
    resp = await dispatcher.post(wire.API + "/dispatches", data=first, headers=FRAME)
    assert resp.status == 200  # the same request again: a retry, answered with the same id
    result = await asyncio.to_thread(ct.get_result, ID, True, addr)
    assert result.result == 6  # (1 + 2) * 2: the first dispatch's workflow and inputs


@pytest.mark.parametrize("suffix", ["\n", "%0A", "%0a", "%20", "%0D%0A"])
async def test_an_id_with_a_trailing_newline_is_no_id(dispatcher: TestClient, suffix: str) -> None:
    resp = await dispatcher.post(wire.API + "/dispatches", headers=FRAME, data=build_submission(
        two_node, (1, 2), {}, dispatch_id=ID, disable_run=True))
    assert resp.status == 201
    quoted = ID + suffix.replace("\n", "%0A")
    for method, path in (("GET", f"/dispatches/{quoted}"), ("GET", f"/dispatches/{quoted}/status"),
                         ("GET", f"/dispatches/{quoted}/nodes/0"),
                         ("POST", f"/dispatches/{quoted}/start"),
                         ("POST", f"/dispatches/{quoted}/cancel"),
                         ("DELETE", f"/dispatches/{quoted}")):
        resp = await dispatcher.request(method, wire.API + path, headers=JSON,
                                        data=b"{}" if method == "POST" else None)
        assert (resp.status, (await resp.json())["error"]) == (404, "DispatchNotFound"), path
    with_newline = build_submission(two_node, (1, 2), {}, dispatch_id=ID + "\n", disable_run=True)
    resp = await dispatcher.post(wire.API + "/dispatches", data=with_newline, headers=FRAME)
    assert (resp.status, (await resp.json())["error"]) == (400, "InvalidRequest")


@ct.electron(executor=ct.executor.DaskExecutor(retries=3))
def _retried(x):
    return x


@ct.lattice
def _retrying(x):
    return _retried(x)


async def test_retries_are_capped_where_they_are_written_and_at_the_server(
        dispatcher: TestClient) -> None:
    with pytest.raises(ValueError, match="retries must be an integer >= 0 and at most 100"):
        ct.executor.DaskExecutor(retries=10**9)
    # A request built by hand (not through the SDK) is refused by the server too.
    header, blobs = wire.unpack(build_submission(_retrying, (1,), {}, dispatch_id=ID,
                                                 disable_run=False))
    [node] = [n for n in header["graph"]["nodes"] if n.get("options")]
    node["options"]["retries"] = 10**9
    resp = await dispatcher.post(wire.API + "/dispatches", data=wire.pack(header, blobs),
                                 headers=FRAME)
    answer = await resp.json()
    assert (resp.status, answer["error"]) == (400, "InvalidRequest")
    assert "retries must be an integer >= 0 and at most 100, got 1000000000" in answer["message"]


@pytest.mark.parametrize("value", ["no", 0, None])
async def test_disable_run_is_true_or_false(dispatcher: TestClient, value: object) -> None:
    # "no" was taken for true: the dispatch was stored and never ran
    header, blobs = wire.unpack(build_submission(two_node, (1, 2), {}, dispatch_id=ID,
                                                 disable_run=False))
    header["disable_run"] = value
    resp = await dispatcher.post(wire.API + "/dispatches", data=wire.pack(header, blobs),
                                 headers=FRAME)
    answer = await resp.json()
    assert (resp.status, answer["error"]) == (400, "InvalidRequest")
    assert "disable_run must be true or false" in answer["message"]


async def test_a_child_sent_again_by_its_node_is_that_child_whatever_its_bytes(
        dispatcher: TestClient, addr: str) -> None:
    """A sublattice node that runs again (its worker died, the dispatcher restarted) sends its
    child again under the same id, pickled by another worker process: found in a randomized
    kill test, where the child's function went by value with other module state and the node
    failed "taken by a different workflow" while its first child ran on. Only the same
    parent node may do that: for anyone else the id still means one workflow."""
    parent = build_submission(two_node, (1, 2), {}, dispatch_id=ID, disable_run=True)
    assert (await dispatcher.post(wire.API + "/dispatches", data=parent, headers=FRAME)).status == 201
    child_id = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
    first = build_submission(two_node, (1, 2), {}, dispatch_id=child_id, disable_run=True)
    again = build_submission(_other, (5, 6), {}, dispatch_id=child_id, disable_run=True)
    of_node_0 = {"parent": ID, "parent_node": "0"}
    resp = await dispatcher.post(wire.API + "/dispatches", data=first, headers=FRAME,
                                 params=of_node_0)
    assert resp.status == 201
    resp = await dispatcher.post(wire.API + "/dispatches", data=again, headers=FRAME,
                                 params=of_node_0)
    answer = await resp.json()
    assert (resp.status, answer.get("dispatch_id")) == (200, child_id), answer
    for params in ({"parent": ID, "parent_node": "1"}, None):  # another node, or no parent
        resp = await dispatcher.post(wire.API + "/dispatches", data=again, headers=FRAME,
                                     params=params)
        answer = await resp.json()
        assert (resp.status, answer["error"]) == (409, "DispatchState"), params
    resp = await dispatcher.get(wire.API + "/dispatches", headers=JSON)
    listed = (await resp.json())["dispatches"]
    assert [d["name"] for d in listed if d["dispatch_id"] == child_id] == ["two_node"]  # kept
