"""Retention: delete a finished dispatch or purge old ones; a blob another dispatch uses stays."""

from __future__ import annotations

import asyncio

import pytest

import covalent as ct
from covalent import api
from covalent.config import client_config
from dispatcher.keys import STORE
from tests.conftest import JSON, fetched, run
from tests.tasks import block, fail, identity


@ct.lattice
def echo(data):
    return identity(data)


async def test_deleting_a_dispatch_keeps_what_another_dispatch_shares(dispatcher, addr) -> None:
    shared = b"s" * (400 * 1024)  # the same input (a blob file) in both dispatches
    first, second = await run(echo, addr, shared), await run(echo, addr, shared)
    store = dispatcher.app[STORE]
    path = store.blob_dir
    files = sorted(p.name for p in path.rglob("*") if p.is_file())
    resp = await dispatcher.delete(f"/api/v1/dispatches/{first.dispatch_id}", headers=JSON)
    assert resp.status == 200 and (await resp.json())["deleted"] == [first.dispatch_id]
    with pytest.raises(ct.errors.DispatchNotFoundError):
        await fetched(first.dispatch_id, addr, wait=False)
    again = await fetched(second.dispatch_id, addr, wait=False)
    assert again.result == shared and again.inputs["args"][0] == shared
    assert sorted(p.name for p in path.rglob("*") if p.is_file()) == files  # all still shared
    resp = await dispatcher.delete(f"/api/v1/dispatches/{second.dispatch_id}", headers=JSON)
    assert resp.status == 200
    assert [p for p in path.rglob("*") if p.is_file()] == []  # nobody uses them any more


async def test_a_running_dispatch_is_not_deleted(dispatcher, addr) -> None:
    @ct.lattice
    def slow():
        return block(1)

    dispatch_id = await asyncio.to_thread(ct.dispatch(slow, dispatcher_addr=addr))
    resp = await dispatcher.delete(f"/api/v1/dispatches/{dispatch_id}", headers=JSON)
    body = await resp.json()
    assert (resp.status, body["error"]) == (409, "DispatchState")
    resp = await dispatcher.delete("/api/v1/dispatches/00000000-0000-4000-8000-000000000000",
                                   headers=JSON)
    assert resp.status == 404


async def test_purge_by_age_and_status(dispatcher, addr) -> None:
    done = await run(echo, addr, 1)

    failing = await run(_failing, addr)
    assert failing.status == "FAILED"
    cfg = client_config(addr)
    out = await asyncio.to_thread(api.request_json, cfg, "DELETE", "/dispatches",
                                  query={"status": ["FAILED"]})
    assert out["dispatch_ids"] == [failing.dispatch_id]
    out = await asyncio.to_thread(api.request_json, cfg, "DELETE", "/dispatches",
                                  query={"older_than": "1d"})
    assert out["deleted"] == 0  # nothing ended a day ago
    out = await asyncio.to_thread(api.request_json, cfg, "DELETE", "/dispatches",
                                  query={"older_than": "0s"})
    assert out["dispatch_ids"] == [done.dispatch_id]
    with pytest.raises(ct.errors.InvalidRequestError, match="duration"):
        await asyncio.to_thread(api.request_json, cfg, "DELETE", "/dispatches",
                                query={"older_than": "soon"})


@ct.lattice
def _failing():
    return fail(1)


@pytest.mark.parametrize("body", [
    {"filter": {"status": "failed"}},  # a status in the wrong case
    {"filter": {"status": "FAILED", "age": "older-7days"}},  # an age the list does not offer
    {"filter": {"sort": "evil"}}, {"filter": {"statuses": "FAILED"}},  # a key it does not have
    {"filter": {"status": "FAILED"}, "dry_run": True},  # a key the bulk delete does not have
    {},
])
async def test_a_bulk_delete_with_a_filter_it_cannot_read_deletes_nothing(
        dispatcher, addr, body) -> None:
    # An unknown status or age used to count as no filter: every finished dispatch deleted.
    done = await run(echo, addr, 1)
    failing = await run(_failing, addr)
    resp = await dispatcher.post("/api/v1/listing/delete", json=body, headers=JSON)
    assert resp.status == 400 and (await resp.json())["error"] == "InvalidRequest"
    for kept in (done, failing):
        assert (await fetched(kept.dispatch_id, addr)).status in ("COMPLETED", "FAILED")
    resp = await dispatcher.post("/api/v1/listing/delete", json={"filter": {"status": "FAILED"}},
                                 headers=JSON)
    assert (resp.status, (await resp.json())["deleted"]) == (200, [failing.dispatch_id])


@pytest.mark.parametrize("query", ["status=BOGUS", "sort=evil", "order=up", "limit=-5",
                                   "limit=nan", "offset=1e3", "limit=5000"])
async def test_the_listing_refuses_what_it_cannot_read(dispatcher, query) -> None:
    resp = await dispatcher.get(f"/api/v1/listing?{query}")
    assert resp.status == 400 and (await resp.json())["error"] == "InvalidRequest", query
    if query.startswith("status"):  # the REST list too (it answered an empty list)
        resp = await dispatcher.get(f"/api/v1/dispatches?{query}")
        assert resp.status == 400 and "COMPLETED" in (await resp.json())["message"]


async def test_a_delete_without_a_body_needs_no_content_type(dispatcher, addr) -> None:
    # `curl -X DELETE .../dispatches/ID` sends no Content-Type: it was a 415. A body still
    # has to be JSON (a page cannot send a DELETE without a preflight, but the rule is one).
    done = await run(echo, addr, 1)
    resp = await dispatcher.delete(f"/api/v1/dispatches/{done.dispatch_id}", data=b"x",
                                   headers={"Content-Type": "text/plain"})
    assert resp.status == 415
    resp = await dispatcher.delete(f"/api/v1/dispatches/{done.dispatch_id}")
    assert (resp.status, (await resp.json())["deleted"]) == (200, [done.dispatch_id])
