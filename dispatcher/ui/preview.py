"""``lattice.draw`` outside a notebook: the SDK posts a graph it built (not run), the server keeps
its picture and shows it on a page (#22).

``POST /api/v1/previews`` takes ``{"name": str, "graph": {"nodes": [{"id", "name", "kind"}],
"edges": [[src, dst, ...], ...]}}`` (JSON only: nothing is unpickled), draws it with
``covalent.layout`` (the web UI's layout) and answers 201 ``{"preview_id", "path"}``;
``GET /preview/{preview_id}`` is the page. The last ``KEEP`` previews are kept, in memory only.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import OrderedDict
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from covalent import wire
from covalent.layout import layout, to_svg
from covalent.wire import NodeKind

from ..errors import InvalidRequest
from ..users import may_see, user_of
from .access import link_for

routes = web.RouteTableDef()
KEEP = 20
MAX_NODES = 50_000
PREVIEWS = web.AppKey("ui_previews", OrderedDict)  # id -> (name, svg, node count, owner)
_KINDS = frozenset(str(k) for k in NodeKind)


def setup(app: web.Application) -> None:
    app[PREVIEWS] = OrderedDict()
    app.add_routes(routes)


@routes.post(wire.API + "/previews")
async def create(request: web.Request) -> web.Response:
    try:
        body = json.loads(await request.read())
    except (ValueError, RecursionError) as exc:
        raise InvalidRequest(f"body is not UTF-8 JSON: {type(exc).__name__}: {exc}") from None
    name, graph = _checked(body)
    try:
        svg = await asyncio.to_thread(lambda: to_svg(layout(graph, show_all=True), name))
    except ValueError as exc:  # a cycle
        raise InvalidRequest(str(exc)) from None
    previews: OrderedDict[str, tuple[str, str, int, str]] = request.app[PREVIEWS]
    preview_id = str(uuid.uuid4())
    previews[preview_id] = (name, svg, len(graph["nodes"]), user_of(request).name)
    while len(previews) > KEEP:
        previews.popitem(last=False)
    return web.json_response({"preview_id": preview_id,  # a link that lets its browser in
                              # (on replicas, not the token: the output of draw() is kept
                              # in notebooks and CI logs, where a token must not be)
                              "path": link_for(request, f"/preview/{preview_id}")},
                             status=201)


@routes.get("/preview/{preview_id}")
async def page(request: web.Request) -> web.StreamResponse:
    found = request.app[PREVIEWS].get(request.match_info["preview_id"])
    if found is None or not may_see(user_of(request), found[3]):  # someone else's: unknown
        return aiohttp_jinja2.render_template(
            "error.html", request, {"status": 404, "error": "PreviewNotFound", "message":
                                    "No such preview: previews live in memory, the last "
                                    f"{KEEP} of them, until the dispatcher restarts.",
                                    "needs_token": False, "dashboard": "", "path": request.path},
            status=404)
    name, svg, count, _ = found
    return aiohttp_jinja2.render_template(
        "preview.html", request, {"name": name, "svg": svg, "count": count, "dashboard": "",
                                  "path": request.path, "me": user_of(request)})


def _checked(body: Any) -> tuple[str, dict[str, Any]]:
    """The name and graph of a preview request; InvalidRequest says what is wrong."""
    if not isinstance(body, dict) or not isinstance(body.get("graph"), dict):
        raise InvalidRequest("body must be {\"name\": ..., \"graph\": {\"nodes\": [...], \"edges\": [...]}}")
    name = body.get("name", "")
    nodes, edges = body["graph"].get("nodes"), body["graph"].get("edges")
    if not isinstance(name, str) or not isinstance(nodes, list) or not isinstance(edges, list):
        raise InvalidRequest("name must be a string, graph.nodes and graph.edges lists")
    if len(nodes) > MAX_NODES:
        raise InvalidRequest(f"a preview draws at most {MAX_NODES} nodes, got {len(nodes)}")
    clean = []
    for i, n in enumerate(nodes):
        if not isinstance(n, dict) or n.get("id") != i or not isinstance(n.get("name"), str) \
                or n.get("kind") not in _KINDS:
            raise InvalidRequest(f"node {i} must be {{\"id\": {i}, \"name\": str, \"kind\": one of "
                                 f"{sorted(_KINDS)}}}")
        clean.append({"id": i, "name": n["name"][:1000], "kind": n["kind"]})
    pairs = []
    for e in edges:
        if not isinstance(e, list) or len(e) < 2 or not all(
                type(v) is int and 0 <= v < len(nodes) for v in e[:2]):
            raise InvalidRequest(f"an edge must be [src, dst, ...] with node ids, got {e!r:.100}")
        pairs.append([e[0], e[1]])
    return name[:200], {"nodes": clean, "edges": pairs}
