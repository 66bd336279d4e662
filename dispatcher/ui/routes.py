"""Pages of the web UI (server-rendered with jinja2), the fragments htmx swaps in, the graph's
layout as JSON and the live event streams.

Pages: ``/`` the dispatch list, ``/dispatches/{id}`` one dispatch (summary, graph, node table,
node drawer), ``/logs`` the server log. Everything under ``/ui/`` is what those pages fetch.
Handlers read the store and render; nothing here unpickles: previews and sources are text the
workers and the SDK made (``NodeRecord.preview``, ``DispatchRecord.meta``).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from ..authz import admin_only, owner_filter, visible_ids
from ..users import USER
from ..dispatches import check_id
from ..errors import DispatchNotFound, InvalidRequest, NodeNotFound
from ..keys import CLUSTER_INFO, SETTINGS, STORE
from ..state import Status
from ..store import DispatchQuery, DispatchRecord, DispatchStore, NodeRow
from ..store.base import DISPATCH_SORTS, USER_KINDS
from . import access, live, logs
from .keys import GRAPHS, LIVE, LOG_BUFFER
from covalent.layout import HIDDEN_KINDS, display_name
from ..state import TERMINAL
from .views import by_name, duration, seconds

routes = web.RouteTableDef()
PAGE_SIZE = 50
NODE_PAGE_SIZE = 100
STATUSES = [Status.RUNNING, Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.NEW_OBJECT]
NODE_SORTS = ("id", "name", "status", "started", "runtime")


def _int(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name, "")
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 10 else default


def page_number(request: web.Request) -> int:
    """The 1-based ``page`` of the address (1 if absent or not a number)."""
    return max(_int(request, "page", 1), 1)


def _choice(request: web.Request, name: str, allowed: tuple[str, ...] | list[str], default: str) -> str:
    value = request.query.get(name, default)
    return value if value in allowed else default


def _status_filter(request: web.Request) -> str | None:
    value = request.query.get("status", "")
    return value if value in [str(s) for s in STATUSES] else None


def dispatch_id_of(request: web.Request) -> str:
    return check_id(request.match_info["dispatch_id"])


async def get_dispatch(request: web.Request) -> DispatchRecord:
    row = await request.app[STORE].get_dispatch(dispatch_id_of(request))
    if row is None:
        raise DispatchNotFound(request.match_info["dispatch_id"])
    return row


def common(request: web.Request) -> dict[str, Any]:
    info = request.app.get(CLUSTER_INFO) or {}
    return {"dashboard": info.get("dashboard", ""), "path": request.path, "me": request.get(USER)}


# -- one dispatch ----------------------------------------------------------------------------

async def _summary(request: web.Request, row: DispatchRecord, nodes: list[NodeRow]) -> dict[str, Any]:
    """What the dispatch page's header shows; refreshed when the dispatch ends."""
    store = request.app[STORE]
    graph = await request.app[GRAPHS].graph(store, row.dispatch_id) or {"nodes": []}
    post = nodes[-1] if nodes and nodes[-1].kind == "postprocess" else None
    result = await store.get_node(row.dispatch_id, post.node_id) if post is not None else None
    executors = sorted({str(n.get("executor", "")) for n in graph["nodes"]
                        if n.get("kind") in USER_KINDS and n.get("executor")})
    user = [n for n in nodes if n.kind in USER_KINDS]
    per_status = {str(s): sum(1 for n in user if n.status == s) for s in STATUSES}
    return {"d": row, "status": str(row.status), "terminal": row.status in TERMINAL,
            "runtime": duration(seconds(row.start_time, row.end_time)),
            "done": per_status[str(Status.COMPLETED)], "total": len(user), "per_status": per_status,
            "result_preview": result.preview if result is not None else None,
            "inputs": _inputs(row.meta.get("inputs_preview")), "executors": executors,
            "lattice_source": row.meta.get("lattice_source") or "",
            "redispatch_of": row.meta.get("redispatch_of") or "",
            "reused_results": bool(row.meta.get("reused_results")),
            "origin_name": await origin_name(store, row.meta.get("redispatch_of")),
            "workflow_executor": graph["nodes"][-1].get("executor", "") if graph["nodes"] else ""}


async def origin_name(store: DispatchStore, dispatch_id: str | None) -> str:
    """The name of another dispatch, without reading its graph ("" if it is gone)."""
    if not dispatch_id:
        return ""
    page = await store.page_dispatches(DispatchQuery(search=dispatch_id, top_level=False, limit=1))
    return page.rows[0].name if page.rows else ""


def _inputs(preview: Any) -> dict[str, Any]:
    """The lattice's input previews (none for a dispatch stored before the SDK sent them)."""
    preview = preview if isinstance(preview, dict) else {}
    return {"args": preview.get("args") or [], "kwargs": preview.get("kwargs") or {}}


_SHORT = re.compile(r"[0-9a-f]{6,35}")  # the start of an id, as the list shows it (8)


@routes.get("/dispatches/{dispatch_id}")
async def dispatch_page(request: web.Request) -> web.StreamResponse:
    given = request.match_info["dispatch_id"].lower()
    if _SHORT.fullmatch(given):  # a short id pasted from the list or `covalent list`
        found = await request.app[STORE].find_ids(given, 2, owner_filter(request))
        if len(found) == 1:
            raise web.HTTPFound(str(request.rel_url.with_path(f"/dispatches/{found[0]}")
                                    .with_query(request.rel_url.query)))
    row = await get_dispatch(request)
    nodes = await request.app[STORE].node_rows(row.dispatch_id)
    context = {**common(request), **await _summary(request, row, nodes),
               "by_name": by_name(nodes), "statuses": STATUSES, "node_count": len(nodes),
               "table": _node_table(request, row.dispatch_id, nodes)}
    return aiohttp_jinja2.render_template("dispatch.html", request, context)


@routes.get("/ui/dispatches/{dispatch_id}/summary")
async def summary_fragment(request: web.Request) -> web.StreamResponse:
    row = await get_dispatch(request)
    nodes = await request.app[STORE].node_rows(row.dispatch_id)
    context = await _summary(request, row, nodes)
    return aiohttp_jinja2.render_template("_summary.html", request, context)


def _node_table(request: web.Request, dispatch_id: str, nodes: list[NodeRow]) -> dict[str, Any]:
    """One page of the node table: filtered by status, name and kind, sorted, windowed."""
    status = _status_filter(request)
    text = request.query.get("q", "").strip().lower()[:200]
    show_all = request.query.get("all") == "1"
    sort = _choice(request, "sort", NODE_SORTS, "id")
    descending = request.query.get("order") == "desc"
    picked = [n for n in nodes if (show_all or n.kind not in HIDDEN_KINDS)
              and (status is None or n.status == status) and (not text or text in n.name.lower())]
    keys = {"id": lambda n: (n.node_id,), "name": lambda n: (n.name.lower(), n.node_id),
            "status": lambda n: (str(n.status), n.node_id),
            "started": lambda n: (n.start_time or "", n.node_id),
            "runtime": lambda n: (seconds(n.start_time, n.end_time) or -1.0, n.node_id)}
    picked.sort(key=keys[sort], reverse=descending)
    pages = max(1, math.ceil(len(picked) / NODE_PAGE_SIZE))
    page_no = min(max(_int(request, "page", 1), 1), pages)
    window = picked[(page_no - 1) * NODE_PAGE_SIZE : page_no * NODE_PAGE_SIZE]
    return {"dispatch_id": dispatch_id, "rows": [
                {"n": n, "label": display_name(n.name),
                 "runtime": duration(seconds(n.start_time, n.end_time))} for n in window],
            "matching": len(picked), "page_no": page_no, "pages": pages, "status": status or "",
            "q": request.query.get("q", ""), "all": show_all, "sort": sort, "descending": descending,
            "statuses": STATUSES, "sorts": NODE_SORTS}


@routes.get("/ui/dispatches/{dispatch_id}/nodes")
async def node_table(request: web.Request) -> web.StreamResponse:
    dispatch_id = dispatch_id_of(request)
    nodes = await request.app[STORE].node_rows(dispatch_id)
    if not nodes and await request.app[STORE].get_status(dispatch_id) is None:
        raise DispatchNotFound(dispatch_id)
    return aiohttp_jinja2.render_template("_node_table.html", request,
                                          {"table": _node_table(request, dispatch_id, nodes)})


@routes.get("/ui/dispatches/{dispatch_id}/graph")
async def graph_json(request: web.Request) -> web.Response:
    """The layout of one view (``all=1`` shows hidden nodes, ``expand=<box key>`` opens boxes)
    plus every node's status and whether it is a user electron."""
    dispatch_id = dispatch_id_of(request)
    store = request.app[STORE]
    graphs = request.app[GRAPHS]
    graph = await graphs.graph(store, dispatch_id)
    if graph is None:
        raise DispatchNotFound(dispatch_id)
    expand = tuple(sorted(set(request.query.getall("expand", [])[:50])))
    lay = await graphs.layout(dispatch_id, graph, request.query.get("all") == "1", expand)
    nodes = await store.node_rows(dispatch_id)
    body = lay.to_json()
    body["status"] = "".join(live.code(n.status) for n in nodes)
    body["user"] = "".join("1" if n.kind in USER_KINDS else "0" for n in nodes)
    return web.json_response(body, dumps=_compact)


def _compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


@routes.get("/ui/dispatches/{dispatch_id}/events")
async def dispatch_events(request: web.Request) -> web.StreamResponse:
    dispatch_id = dispatch_id_of(request)
    if await request.app[STORE].get_status(dispatch_id) is None:
        raise DispatchNotFound(dispatch_id)
    return await live.stream_dispatch(request, request.app[LIVE], request.app[STORE], dispatch_id)


@routes.get("/ui/events")
async def listing_events(request: web.Request) -> web.StreamResponse:
    shown = [i for i in request.query.get("ids", "").split(",") if i][:PAGE_SIZE]
    for i in shown:
        check_id(i)
    shown = await visible_ids(request, shown)  # someone else's: as if unknown
    return await live.stream_listing(request, request.app[LIVE], request.app[STORE], shown,
                                     owner_filter(request))


# -- the log ---------------------------------------------------------------------------------

@routes.get("/logs")
@admin_only  # every user's errors and names (#26)
async def log_page(request: web.Request) -> web.StreamResponse:
    query = request.query.get("q", "")[:200]
    page = await asyncio.to_thread(logs.read_page, request.app[SETTINGS].log_path,
                                   request.app[LOG_BUFFER], query, _int(request, "page", 1))
    template = "_log_table.html" if request.headers.get("HX-Request") else "logs.html"
    return aiohttp_jinja2.render_template(template, request,
                                          {**common(request), "log": page, "q": query})
