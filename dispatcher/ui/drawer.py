"""The node drawer: everything about one node, rendered by the server (issue #15, #24).

What it shows beyond the node's record: its **inputs** (each argument's name and the preview
of the node it came from, linked to that node), a failed node's **traceback once**, without
the frames of our own code (the SDK's hooks, the worker's runner), where a **reused** output
came from, and for a RUNNING node what it has **printed so far** (``output-so-far``, asked of
its worker through ``peek`` only while the drawer is open).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp_jinja2
from aiohttp import web

import covalent
from covalent.layout import display_name

from ..errors import InvalidRequest, NodeNotFound
from ..keys import RUNNER, STORE
from ..state import Status
from . import peek
from .keys import GRAPHS
from .routes import dispatch_id_of, origin_name
from .views import duration, seconds

routes = web.RouteTableDef()
INPUTS_SHOWN = 50
# Frames of these directories are ours, not the user's: the SDK (hooks, deps) and the server.
INTERNAL = (str(Path(covalent.__file__ or "covalent").parent) + "/", str(Path(__file__).parents[1]) + "/")
_FRAME = re.compile(r'^  File "(?P<file>[^"]+)", line \d+, in (?P<fn>.+)$')


def user_traceback(text: str, internal: tuple[str, ...] = INTERNAL) -> str:
    """A traceback without the frames of ``internal`` directories (each frame is its ``File``
    line and the indented lines under it).

    >>> tb = '''Traceback (most recent call last):
    ...   File "/x/covalent/api.py", line 9, in call_with_hooks
    ...     return fn(*args)
    ...            ^^^^^^^^^
    ...   File "/home/me/flow.py", line 3, in task
    ...     raise ValueError("no")
    ... ValueError: no'''
    >>> print(user_traceback(tb, ("/x/covalent/",)))
    Traceback (most recent call last):
      File "/home/me/flow.py", line 3, in task
        raise ValueError("no")
    ValueError: no
    >>> print(user_traceback(tb.replace("/home/me/", "/x/covalent/"), ("/x/covalent/",)))
    ValueError: no
    """
    out: list[str] = []
    skipping = False
    for line in text.splitlines():
        frame = _FRAME.match(line)
        if frame:
            skipping = frame["file"].startswith(internal)
        elif not line.startswith("    "):
            skipping = False
        if not skipping:
            out.append(line)
    # A header whose every frame was ours says nothing (a sublattice's failure): dropped.
    out = [line for i, line in enumerate(out)
           if not (line.startswith("Traceback (most recent call last):")
                   and (i + 1 == len(out) or not _FRAME.match(out[i + 1])))]
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def split_stderr(stderr: str | None, error: str | None) -> tuple[str, bool]:
    """A failed node's stderr ends with its traceback, which the drawer shows once, under Error:
    the stderr without it, and whether it was there.

    >>> split_stderr("warning\\nTraceback: x\\n", "Traceback: x\\n")
    ('warning\\n', True)
    >>> split_stderr("printed", None)
    ('printed', False)
    """
    if stderr and error and stderr.endswith(error):
        return stderr[: len(stderr) - len(error)], True
    return stderr or "", False


async def _inputs(store: Any, dispatch_id: str, graph: dict[str, Any], node_id: int
                  ) -> tuple[list[dict[str, Any]], int, list[int]]:
    """The node's arguments (name, the parent node, its preview), how many in all, and the
    nodes it only waits for (``ct.wait``)."""
    edges = [e for e in graph["edges"] if int(e[1]) == node_id]
    waits = [int(e[0]) for e in edges if e[3] == "wait"]
    args = sorted((e for e in edges if e[3] != "wait"),
                  key=lambda e: (e[3] != "arg", e[4] if e[4] is not None else 0, str(e[2])))
    shown = []
    for src, _, name, kind, _ in args[:INPUTS_SHOWN]:
        parent = await store.get_node(dispatch_id, int(src))
        spec = graph["nodes"][int(src)] if int(src) < len(graph["nodes"]) else {}
        shown.append({"name": name if not str(name).startswith("node:") else "", "kind": kind,
                      "node_id": int(src), "parent": display_name(str(spec.get("name", ""))),
                      "parent_kind": spec.get("kind", ""),
                      "preview": parent.preview if parent is not None else None,
                      "status": str(parent.status) if parent is not None else ""})
    return shown, len(args), waits


def _node_id(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit() and len(raw) < 10):
        raise InvalidRequest(f"node id must be a non-negative integer, got {raw!r}")
    return int(raw)


def _filled(value: Any) -> bool:
    """Whether deps/hook metadata says anything (``{"bash": [], "pip": []}`` does not)."""
    if isinstance(value, dict):
        return any(_filled(v) for v in value.values())
    return bool(value)


@routes.get("/ui/dispatches/{dispatch_id}/nodes/{node_id}")
async def node_drawer(request: web.Request) -> web.StreamResponse:
    dispatch_id = dispatch_id_of(request)
    store = request.app[STORE]
    node = await store.get_node(dispatch_id, _node_id(request.match_info["node_id"]))
    if node is None:
        raise NodeNotFound(f"dispatch {dispatch_id} has no node {request.match_info['node_id']}")
    row = await store.get_dispatch(dispatch_id)
    graph = await request.app[GRAPHS].graph(store, dispatch_id) or {"nodes": [], "edges": []}
    spec = graph["nodes"][node.node_id] if node.node_id < len(graph["nodes"]) else {}
    meta = spec.get("metadata") or {}
    sources = (row.meta.get("sources") if row is not None else None) or {}
    inputs, n_inputs, waits = await _inputs(store, dispatch_id, graph, node.node_id)
    stderr, traceback_in_stderr = split_stderr(node.stderr, node.error)
    context = {"dispatch_id": dispatch_id, "node": node, "label": display_name(node.name),
               "runtime": duration(seconds(node.start_time, node.end_time)),
               "executor": spec.get("executor") or meta.get("executor") or "",
               "executor_data": meta.get("executor_data") or {},
               "deps": {k: meta[k] for k in ("deps", "call_before", "call_after") if _filled(meta.get(k))},
               "source": sources.get(spec.get("fn_hash", ""), ""),
               "inputs": inputs, "n_inputs": n_inputs, "waits": waits,
               "error": user_traceback(node.error) if node.error else "",
               "stderr": stderr, "traceback_in_stderr": traceback_in_stderr,
               "running": node.status == Status.RUNNING,
               "origin_name": await origin_name(store, node.reused_from)}
    return aiohttp_jinja2.render_template("_drawer.html", request, context)


@routes.get("/ui/dispatches/{dispatch_id}/nodes/{node_id}/output-so-far")
async def output_so_far(request: web.Request) -> web.Response:
    """What a RUNNING node printed so far, read from its worker now (``running`` false once it
    is not running: its stored stdout/stderr are then in its record)."""
    dispatch_id = dispatch_id_of(request)
    store = request.app[STORE]
    node = await store.get_node(dispatch_id, _node_id(request.match_info["node_id"]))
    if node is None:
        raise NodeNotFound(f"dispatch {dispatch_id} has no node {request.match_info['node_id']}")
    if node.status != Status.RUNNING:
        return web.json_response({"running": False})
    client = request.app[RUNNER].client
    return web.json_response(await peek.output_so_far(client, dispatch_id, node.node_id,
                                                      node.name, node.kind))
