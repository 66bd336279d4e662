"""REST endpoints the web UI and the progress views add to ``/api/v1`` (issue #15).

| method and path | answer |
| --- | --- |
| ``GET /listing?status=&q=&sort=&order=&offset=&limit=`` | a page of top-level dispatches with ``done``/``total`` user electrons, ``total`` matching, per-status ``counts`` |
| ``GET /dispatches/{id}/progress?since=&wait=`` | per electron name: total, completed, running, failed, cancelled, ``seconds`` (first start to last end, or to now); the dispatch's ``error``; with ``wait``, answers once a commit changes the dispatch after ``version`` ``since`` (a long-poll, pushed from the commit point) |
| ``POST /dispatches/{id}/redispatch`` | runs the stored dispatch again with the same inputs, server side: ``{"dispatch_id": new}`` |
| ``POST /listing/delete`` | deletes ``{"dispatch_ids": [...]}`` (finished or never started), or every finished top-level dispatch matching ``{"filter": {"status", "q", "age"}}`` (the list's filter): ``{"deleted": [ids]}`` |
| ``GET /resolve/{prefix}`` | the one dispatch whose id starts with ``prefix`` (what the UI shows: 8 characters): ``{"dispatch_id": id}``; 404 if none, 409 naming them if several |
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from aiohttp import web

from covalent import wire

from .. import dispatches
from ..authz import owner_filter, visible_ids
from ..errors import DispatchNotFound, DispatchState, InvalidRequest
from ..keys import RUNNER, SETTINGS, STORE
from . import live
from ..state import TERMINAL
from .keys import GRAPHS, LIVE
from .listing import FILTER_KEYS, FINISHED, listing_query
from .views import by_name
from ..users import answer_only_the_live

routes = web.RouteTableDef()


def _number(request: web.Request, name: str, default: float, maximum: float) -> float:
    raw = request.query.get(name, "")
    try:
        value = float(raw) if raw else default
    except ValueError:
        value = default
    return min(max(value, 0.0), maximum) if value == value else default


def _count(request: web.Request, name: str, default: int, maximum: int) -> int:
    """A whole-number query parameter from 0 to ``maximum``; InvalidRequest otherwise."""
    raw = request.query.get(name, "")
    if not raw:
        return default
    if not raw.isdigit() or int(raw) > maximum:
        raise InvalidRequest(f"{name} must be a whole number from 0 to {maximum}, not {raw!r}")
    return int(raw)


@routes.get(wire.API + "/listing")
async def listing(request: web.Request) -> web.Response:
    store = request.app[STORE]
    params = {k: v for k, v in request.query.items() if k in FILTER_KEYS}
    # the list's own filter (400 for an unknown status, age, sort or order), as a page of it
    query, _ = listing_query(params, limit=_count(request, "limit", 20, 1000),
                             owner=owner_filter(request), strict=True)
    page = await store.page_dispatches(replace(query, offset=_count(request, "offset", 0, 10**9)))
    counts = await store.electron_counts([r.dispatch_id for r in page.rows])
    return web.json_response({
        "total": page.total, "counts": page.counts,
        "dispatches": [{**r.to_json(), **live.done_total(counts.get(r.dispatch_id, {}))}
                       for r in page.rows]})


@routes.get(wire.API + "/dispatches/{dispatch_id}/progress")
async def progress(request: web.Request) -> web.Response:
    app = request.app
    dispatch_id = dispatches.check_id(request.match_info["dispatch_id"])
    store, hub = app[STORE], app[LIVE]
    status = await store.get_status(dispatch_id)
    if status is None:
        raise DispatchNotFound(dispatch_id)
    wait = _number(request, "wait", 0, app[SETTINGS].long_poll_max_s)
    if wait and status not in TERMINAL and "since" in request.query:
        await hub.changed_since(dispatch_id, int(_number(request, "since", 0, 1e15)), wait)
        await answer_only_the_live(request)
    version = hub.version(dispatch_id)  # read before the rows: a later commit wakes the next call
    row = await store.get_dispatch(dispatch_id)
    nodes = await store.node_rows(dispatch_id)
    if row is None:
        raise DispatchNotFound(dispatch_id)
    hub.follow(dispatch_id, nodes, row.status)  # a replica reads others' commits for the next call
    return web.json_response({
        "dispatch_id": dispatch_id, "name": row.name, "status": str(row.status),
        "start_time": row.start_time, "end_time": row.end_time, "version": version,
        "error": row.error,
        "electrons": [p.to_json() for p in by_name(nodes)]})


@routes.post(wire.API + "/dispatches/{dispatch_id}/redispatch")
async def redispatch(request: web.Request) -> web.Response:
    dispatch_id = dispatches.check_id(request.match_info["dispatch_id"])
    row = await request.app[STORE].get_dispatch(dispatch_id)
    if row is None:
        raise DispatchNotFound(dispatch_id)
    new_id = await dispatches.clone(request.app[STORE], request.app[RUNNER], row)
    return web.json_response({"dispatch_id": new_id}, status=201)


BULK_MAX = 100_000
PREFIX = re.compile(r"[0-9a-f-]{1,36}")


@routes.post(wire.API + "/listing/delete")
async def delete_many(request: web.Request) -> web.Response:
    """The list's bulk delete: chosen rows, or every finished dispatch its filter matches."""
    body = await _json_object(request)
    store, runner = request.app[STORE], request.app[RUNNER]
    if len(body) != 1 or not ({"filter", "dispatch_ids"} & set(body)):
        raise InvalidRequest("a bulk delete takes one key, filter or dispatch_ids; got "
                             f"{sorted(body)}")
    if "filter" in body:
        spec = body["filter"]
        if not isinstance(spec, dict) or not all(isinstance(v, str) for v in spec.values()):
            raise InvalidRequest("filter must be an object of strings: status, q, age")
        query, _ = listing_query(spec, limit=1000, owner=owner_filter(request), strict=True)
        if query.status is not None and query.status not in FINISHED:
            raise InvalidRequest(f"only finished dispatches are deleted by filter, not {query.status}")
        ids: list[str] = []
        for status in [query.status] if query.status else FINISHED:
            offset = 0
            while len(ids) < BULK_MAX:
                page = await store.page_dispatches(replace(query, status=status, offset=offset))
                ids += [r.dispatch_id for r in page.rows]
                offset += len(page.rows)
                if not page.rows or offset >= page.total:
                    break
        pending = False
    else:
        chosen = body.get("dispatch_ids")
        if not isinstance(chosen, list) or not all(isinstance(i, str) for i in chosen) \
                or len(chosen) > BULK_MAX:
            raise InvalidRequest("dispatch_ids must be a list of dispatch ids")
        ids = await visible_ids(request, [dispatches.check_id(i) for i in chosen])
        pending = True  # someone else's are left, as unknown ids are
    deleted = await store.delete_dispatches([i for i in ids if i not in runner.runs], pending)
    for i in deleted:
        request.app[GRAPHS].forget(i)
    return web.json_response({"deleted": deleted})


@routes.get(wire.API + "/resolve/{prefix}")
async def resolve(request: web.Request) -> web.Response:
    """The dispatch whose id starts with ``prefix`` (``covalent watch 1a2b3c4d``)."""
    prefix = request.match_info["prefix"].strip().lower()
    if not PREFIX.fullmatch(prefix):
        raise InvalidRequest(f"a dispatch id or its start (hex digits and dashes), not {prefix!r}")
    found = await request.app[STORE].find_ids(prefix, 10, owner_filter(request))
    if not found:
        raise DispatchNotFound(prefix)
    if len(found) > 1:
        raise DispatchState(f"{len(found)}{'+' if len(found) == 10 else ''} dispatches start with "
                            f"{prefix!r}: {', '.join(found)}; give more of the id")
    return web.json_response({"dispatch_id": found[0]})


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise InvalidRequest("body must be JSON") from None
    if not isinstance(body, dict):
        raise InvalidRequest("body must be a JSON object")
    return body
