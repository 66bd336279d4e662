"""REST endpoints the web UI and the progress views add to ``/api/v1`` (issue #15).

| method and path | answer |
| --- | --- |
| ``GET /listing?status=&q=&sort=&order=&offset=&limit=`` | a page of top-level dispatches with ``done``/``total`` user electrons, ``total`` matching, per-status ``counts`` |
| ``GET /dispatches/{id}/progress?since=&wait=`` | per electron name: total, completed, running, failed, cancelled; with ``wait``, answers once a commit changes the dispatch after ``version`` ``since`` (a long-poll, pushed from the commit point) |
| ``POST /dispatches/{id}/redispatch`` | runs the stored dispatch again with the same inputs, server side: ``{"dispatch_id": new}`` |
"""

from __future__ import annotations

from aiohttp import web

from covalent import wire

from .. import dispatches
from ..errors import DispatchNotFound
from ..keys import RUNNER, SETTINGS, STORE
from ..store import DispatchQuery
from ..store.base import DISPATCH_SORTS
from . import live
from .keys import LIVE
from ..state import TERMINAL
from .views import by_name

routes = web.RouteTableDef()


def _number(request: web.Request, name: str, default: float, maximum: float) -> float:
    raw = request.query.get(name, "")
    try:
        value = float(raw) if raw else default
    except ValueError:
        value = default
    return min(max(value, 0.0), maximum) if value == value else default


@routes.get(wire.API + "/listing")
async def listing(request: web.Request) -> web.Response:
    store = request.app[STORE]
    status = request.query.get("status") or None
    sort = request.query.get("sort", "created")
    query = DispatchQuery(status=status, search=request.query.get("q", "")[:200],
                          sort=sort if sort in DISPATCH_SORTS else "created",
                          descending=request.query.get("order", "desc") != "asc",
                          offset=int(_number(request, "offset", 0, 1e9)),
                          limit=int(_number(request, "limit", 20, 1000)))
    page = await store.page_dispatches(query)
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
    version = hub.version(dispatch_id)  # read before the rows: a later commit wakes the next call
    row = await store.get_dispatch(dispatch_id)
    nodes = await store.node_rows(dispatch_id)
    if row is None:
        raise DispatchNotFound(dispatch_id)
    return web.json_response({
        "dispatch_id": dispatch_id, "name": row.name, "status": str(row.status),
        "start_time": row.start_time, "end_time": row.end_time, "version": version,
        "electrons": [p.to_json() for p in by_name(nodes)]})


@routes.post(wire.API + "/dispatches/{dispatch_id}/redispatch")
async def redispatch(request: web.Request) -> web.Response:
    dispatch_id = dispatches.check_id(request.match_info["dispatch_id"])
    row = await request.app[STORE].get_dispatch(dispatch_id)
    if row is None:
        raise DispatchNotFound(dispatch_id)
    new_id = await dispatches.clone(request.app[STORE], request.app[RUNNER], row)
    return web.json_response({"dispatch_id": new_id}, status=201)
