"""HTTP routes of the dispatcher (REST API ``/api/v1``) and the error middleware.

Handlers are thin: they parse the request, call ``dispatches``, and answer. Every
``DispatcherError`` becomes a 4xx JSON body ``{"error": ..., "message": ...}``; an unexpected
exception is logged and answered 500 with the same shape, and the server keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from covalent import wire

from . import dispatches, procinfo, reads, transfer
from .errors import (DispatcherError, Forbidden, InvalidRequest, NodeNotFound, PayloadTooLarge,
                     StoreError, TriggerNotFound, Unavailable, is_disk_error)
from .authz import owner_filter, owner_of_visible, visible_ids
from .executors import ExecutorTable, serves
from .keys import CLUSTER_INFO, EXECUTORS, RECORDER, RUNNER, SETTINGS, STORE, TRIGGERS
from .offload import off_loop
from .sessions import SESSIONS, VIA_SESSION
from .upload import Upload, read_frame
from .users import RECHECK_S, answer_only_the_live, may_see, user_of
from .state import Status, is_terminal
from .ui.access import link_for
from .worker.blobs import DamagedBlob

log = logging.getLogger("covalent.dispatcher")
routes = web.RouteTableDef()
_NODE_ID = re.compile(r"[0-9]{1,9}")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_body(code: str, message: str, status: int) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Unavailable as exc:  # the store busy or unreachable, or the server stopping
        if isinstance(exc, StoreError):
            log.warning("store unavailable on %s %s: %s", request.method, request.path, exc)
        resp = error_body("Unavailable", str(exc), 503)
        resp.headers["Retry-After"] = "1"
        return resp
    except DispatcherError as exc:  # a class's ``code`` where its name is not the contract's
        if exc.status >= 500:
            log.error("%s on %s %s: %s", type(exc).__name__, request.method, request.path, exc)
        return error_body(getattr(exc, "code", type(exc).__name__), str(exc), exc.status)
    except DamagedBlob as exc:  # found before anything was sent (see transfer)
        log.error("%s %s: %s", request.method, request.path, exc)
        return error_body("StoredDataLost", f"{exc}; run the dispatch again to compute it "
                          "anew", 410)
    except web.HTTPRequestEntityTooLarge as exc:
        return error_body("PayloadTooLarge", exc.text or "request body too large", 413)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_body(exc.reason.replace(" ", ""), exc.text or exc.reason, exc.status)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # last resort: answer JSON, log, keep serving
        if isinstance(exc, ConnectionError) and (request.transport is None
                                                 or request.transport.is_closing()):
            # The client left (Ctrl-C in a long poll, mid-upload): nobody to answer, no 500.
            log.info("the client of %s %s went away: %s", request.method, request.path, exc)
            return error_body("ClientGone", "the client closed the connection", 400)
        if is_disk_error(exc):  # an upload's file (the store raises StoreFull itself)
            log.error("store write failed on %s %s: %s", request.method, request.path, exc)
            return error_body("StorageFull", f"the dispatcher cannot write to its store: "
                              f"{type(exc).__name__}: {exc}", 507)
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_body("InternalError", f"{type(exc).__name__}: {exc}", 500)


def _mib(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 1)


def _float_query(request: web.Request, name: str, default: float, maximum: float) -> float:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InvalidRequest(f"query parameter {name} must be a number, got {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise InvalidRequest(f"query parameter {name} must be >= 0, got {raw!r}")
    return min(value, maximum)


async def _json_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        return {}
    try:
        body = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # bad UTF-8/JSON, huge integers, deep nesting
        raise InvalidRequest(f"body is not UTF-8 JSON: {type(exc).__name__}: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("body must be a JSON object")
    return body


@routes.get(wire.API + "/health")
async def health(request: web.Request) -> web.Response:
    """Who answers: ``covalent start`` checks it is the process it started."""
    return web.json_response({"status": "ok", "pid": os.getpid(),
                              "instance": request.app[SETTINGS].instance_id})


@routes.get(wire.API + "/status")
async def server_status(request: web.Request) -> web.Response:
    """The server, its Dask cluster (the address its workers reach the server at; each worker:
    address, name, threads, memory, resources, the named executors it serves), the named
    executors, running dispatches, triggers."""
    app = request.app
    runner = app[RUNNER]
    info: dict[str, Any] = app[CLUSTER_INFO].copy()
    info["callback"] = runner.public_url  # where the workers reach this server (sublattices)
    client = runner.client
    executors = app[EXECUTORS]
    workers: list[dict[str, Any]] = []
    try:
        if client.scheduler is None or client.status == "closed":
            raise OSError(f"the Dask client is {client.status}")
        identity = await asyncio.wait_for(client.scheduler.identity(), 5)
        found = identity.get("workers", {})
        info["workers"] = len(found)
        info["threads"] = sum(w.get("nthreads", 0) for w in found.values())
        workers = [_worker(address, w, executors) for address, w in sorted(found.items())]
    except (OSError, TimeoutError) as exc:
        info["error"] = f"scheduler not reachable: {exc}"
    pools = executors.to_json()
    for pool in pools:
        pool["workers"] = [w["address"] for w in workers if pool["name"] in w["executors"]]
    return web.json_response({
        "status": "ok",
        "cluster": info,
        "workers": workers,
        "executors": pools,
        "unmapped_executors": {k: list(v) for k, v in executors.unmapped.items()},
        "running": await visible_ids(request, sorted(runner.runs)),
        "replica": runner.replica is not None,  # "running" is this replica's own
        "triggers": await app[TRIGGERS].listing(True, owner_filter(request)),
        "store": _store_info(request),
        "server": {"pid": os.getpid(), "rss_mib": _mib(procinfo.rss_mib(os.getpid())),
                   "peak_rss_mib": _mib(procinfo.peak_rss_mib(os.getpid()))},
    })


@routes.post(wire.API + "/ui/tickets")
async def ui_ticket(request: web.Request) -> web.Response:
    """A link that lets a browser into the UI as the caller, for the CLI to print: it carries a
    ticket this server made, never the token (see ``dispatcher.sessions``)."""
    if request.get(VIA_SESSION):
        raise Forbidden("a browser session cannot make links into the UI; the token can "
                        "(`covalent status` prints one)")
    return web.json_response({"path": link_for(request, "/"),
                              "expires_in": int(request.app[SESSIONS].ttl)})


def _store_info(request: web.Request) -> dict[str, Any]:
    """The store as ``/status`` shows it: where it is for an admin; its kind for a user (its
    path is no business of theirs, and a database trigger could be pointed at it)."""
    app = request.app
    described = app[STORE].describe()
    if not user_of(request).admin:
        return {"database": described.split()[0], "write_error": app[RECORDER].write_error}
    return {"path": str(app[SETTINGS].db_path), "database": described,
            "write_error": app[RECORDER].write_error}


def _worker(address: str, w: dict[str, Any], executors: ExecutorTable) -> dict[str, Any]:
    """One worker as ``/status`` shows it, with the named executors whose tasks it may run."""
    row = {"address": address, "name": str(w.get("id", "")), "host": w.get("host", ""),
           "threads": w.get("nthreads", 0), "memory_limit": w.get("memory_limit", 0),
           "resources": w.get("resources") or {}}
    row["executors"] = [name for name in executors.names()
                        if serves(executors.named[name].options, {**row, "id": row["name"]})]
    return row


@routes.post(wire.API + "/dispatches")
async def submit(request: web.Request) -> web.Response:
    app = request.app
    settings = app[SETTINGS]
    # Read as it arrives: large values go to files, never into memory whole (issue #11).
    upload = await read_frame(request.content, request.content_length, settings.max_body_bytes,
                              settings.upload_dir, dispatches.spoolable)
    try:
        return await _submit(request, upload)
    finally:
        upload.discard()  # what the store did not take


async def _submit(request: web.Request, upload: Upload) -> web.Response:
    app = request.app
    header, graph = await off_loop(dispatches.size_of(upload), dispatches.parse_submission, upload)
    await app[RUNNER].check_client(header.get("client"))
    reuse_of = request.query.get("redispatch_of")
    owner = user_of(request).name
    if reuse_of is not None:  # a redispatch belongs to the owner of the original
        owner = await _original_owner(request, dispatches.check_id(reuse_of))
    reuse = reuse_of if request.query.get("reuse") == "1" else None
    runner = app[RUNNER]
    if not runner.public_url:  # started on port 0 (tests): learn the port from a request
        await runner.tell_workers(str(request.url.origin()))
    parent = None
    if "parent" in request.query:
        parent_node = request.query.get("parent_node", "")
        if not _NODE_ID.fullmatch(parent_node):
            raise InvalidRequest("parent_node must be a node id")
        parent = (dispatches.check_id(request.query["parent"]), int(parent_node))
        owner = await owner_of_visible(request, parent[0])  # the parent's, as create makes it
    registrations = header.get("triggers") or []
    if not isinstance(registrations, list) or not all(isinstance(r, dict) for r in registrations):
        raise InvalidRequest("triggers must be a list of trigger registrations")
    dispatch_id, created = await dispatches.create(app[STORE], runner, header, graph, upload.blobs,
                                                   stored=upload.spooled, reuse_from=reuse,
                                                   parent=parent, redispatch_of=reuse_of,
                                                   owner=owner, graph_text=upload.graph_text)
    trigger_ids = []
    if created:
        try:
            for body in registrations:
                trigger_ids.append(await app[TRIGGERS].register(body, dispatch_id))
        except BaseException:
            # The dispatch waits for its triggers, and its caller never learns its id: a
            # refused trigger leaves nothing behind (it stayed NEW_OBJECT in the list for good).
            if trigger_ids:
                await app[TRIGGERS].stop([dispatch_id])
            if await app[STORE].get_status(dispatch_id) == Status.NEW_OBJECT:  # not started
                await app[STORE].delete_dispatches([dispatch_id], pending=True)  # by one yet
            raise
    return web.json_response({"dispatch_id": dispatch_id, "trigger_ids": trigger_ids},
                             status=201 if created else 200)


async def _original_owner(request: web.Request, original: str) -> str:
    """The owner of the dispatch a submission runs again: 404 if the sender may not see it;
    one that is gone leaves the new dispatch the sender's."""
    owner = (await request.app[STORE].owners([original])).get(original)
    if owner is None and user_of(request).admin:
        return user_of(request).name
    return await owner_of_visible(request, original)


@routes.get(wire.API + "/dispatches")
async def list_dispatches(request: web.Request) -> web.Response:
    store = request.app[STORE]
    status = request.query.get("status")
    if status is not None and status not in {str(s) for s in Status}:
        raise InvalidRequest(f"status must be one of {', '.join(str(s) for s in Status)}; "
                             f"got {status!r}")
    limit = int(_float_query(request, "limit", 100, 10_000))
    rows = await store.list_dispatches(status, limit, owner_filter(request))
    return web.json_response({"dispatches": [r.to_json() for r in rows]})


def _id(request: web.Request) -> str:
    return dispatches.check_id(request.match_info["dispatch_id"])


@routes.get(wire.API + "/dispatches/{dispatch_id}")
async def get_result(request: web.Request) -> web.StreamResponse:
    """The Result: records, and the outputs its result is made of (``?parts=result``, the
    default), none (``none``) or all (``all``); streamed from disk, never held whole.
    ``?gathers=text``: gathering nodes' specs as JSON text (what the SDK asks for)."""
    app = request.app
    dispatch_id = _id(request)
    wait = _float_query(request, "wait", 0, app[SETTINGS].long_poll_max_s)
    parts, gathers = reads.result_options(request.query.get("parts", "result"),
                                          request.query.get("gathers", "json"))
    await _status_while_live(request, dispatch_id, wait)
    results_dir = str(app[SETTINGS].data_dir / "results" / dispatch_id)
    header, blobs = await reads.read_result(app[STORE], dispatch_id, results_dir, parts, gathers)
    return await transfer.stream_frame(request, header, blobs)


@routes.get(wire.API + "/dispatches/{dispatch_id}/nodes/{node_id}/output")
async def get_output(request: web.Request) -> web.StreamResponse:
    """One node's pickled output, streamed; a gathering node answers how it is made of its
    parts (JSON: ``{"gather": {...}}``), since it is stored as nothing but that."""
    node = await reads.read_node(request.app[STORE], _id(request), _node_id(request))
    if node.gather_spec is not None:
        return web.json_response({"gather": node.gather_spec})
    if node.output_ref is None:
        raise NodeNotFound(f"node {node.node_id} has no output ({node.status})")
    found = await request.app[STORE].blob_sources([node.output_ref])
    if node.output_ref not in found:
        raise NodeNotFound(f"the output of node {node.node_id} is no longer stored")
    return await transfer.stream_blob(request, found[node.output_ref])


@routes.post(wire.API + "/dispatches/{dispatch_id}/outputs")
async def get_outputs(request: web.Request) -> web.StreamResponse:
    """Several nodes' outputs in one framed answer: ``{"nodes": [ids]}``."""
    body = await _json_body(request)
    ids = body.get("nodes")
    if not isinstance(ids, list) or not all(type(i) is int for i in ids) or len(ids) > 1_000_000:
        raise InvalidRequest("nodes must be a list of node ids (integers)")
    header, blobs = await reads.output_sources(request.app[STORE], _id(request), ids)
    return await transfer.stream_frame(request, header, blobs)


@routes.get(wire.API + "/dispatches/{dispatch_id}/{part:inputs|lattice|template}")
async def get_part(request: web.Request) -> web.StreamResponse:
    """The dispatch's pickled inputs, lattice or return template (only clients unpickle them)."""
    source = await reads.dispatch_blob(request.app[STORE], _id(request),
                                            request.match_info["part"])
    return await transfer.stream_blob(request, source)


@routes.get(wire.API + "/dispatches/{dispatch_id}/status")
async def get_status(request: web.Request) -> web.Response:
    app = request.app
    dispatch_id = _id(request)
    wait = _float_query(request, "wait", 0, app[SETTINGS].long_poll_max_s)
    status = await _status_while_live(request, dispatch_id, wait)
    return web.json_response({"dispatch_id": dispatch_id, "status": str(status)})


async def _status_while_live(request: web.Request, dispatch_id: str, wait: float) -> Status:
    """``read_status``, its wait cut every ``RECHECK_S``: a user revoked meanwhile is answered
    401 within seconds, not when the dispatch ends (or the long poll's limit)."""
    app = request.app
    deadline = time.monotonic() + wait
    while True:
        left = max(deadline - time.monotonic(), 0.0)
        part, began = min(left, RECHECK_S), time.monotonic()
        status = await reads.read_status(app[STORE], app[RECORDER], dispatch_id, part)
        if not wait:
            return status
        await answer_only_the_live(request)
        if is_terminal(status) or left <= RECHECK_S:
            return status
        if time.monotonic() - began < part - 0.05:  # woken before its time: the server
            return status  # stops (a long poll must not hold its stop up), as before slices


def _node_id(request: web.Request) -> int:
    raw = request.match_info["node_id"]
    if not _NODE_ID.fullmatch(raw):  # ASCII digits only: "²".isdigit() is True
        raise InvalidRequest(f"node id must be a non-negative integer, got {raw!r}")
    return int(raw)


@routes.get(wire.API + "/dispatches/{dispatch_id}/nodes/{node_id}")
async def get_node(request: web.Request) -> web.Response:
    node = await reads.read_node(request.app[STORE], _id(request), _node_id(request))
    return web.json_response(node.to_json())


@routes.post(wire.API + "/dispatches/{dispatch_id}/cancel")
async def cancel(request: web.Request) -> web.Response:
    dispatch_id = _id(request)
    body = await _json_body(request)
    task_ids = body.get("task_ids") or []
    if not isinstance(task_ids, list) or not all(
        isinstance(t, int) and not isinstance(t, bool) for t in task_ids
    ):
        raise InvalidRequest("task_ids must be a list of node ids (integers)")
    out = await dispatches.cancel(request.app[STORE], request.app[RUNNER], dispatch_id, task_ids)
    return web.json_response(out)


@routes.post(wire.API + "/dispatches/{dispatch_id}/start")
async def start(request: web.Request) -> web.Response:
    dispatch_id = _id(request)
    started = await dispatches.start_pending(request.app[STORE], request.app[RUNNER], dispatch_id)
    return web.json_response({"dispatch_id": dispatch_id, "started": started})


@routes.delete(wire.API + "/dispatches/{dispatch_id}")
async def delete_dispatch(request: web.Request) -> web.Response:
    """Delete a finished dispatch and the blobs no other dispatch uses (409 while it runs)."""
    deleted = await dispatches.delete(request.app[STORE], request.app[RUNNER], _id(request))
    return web.json_response({"deleted": deleted})


@routes.delete(wire.API + "/dispatches")
async def purge_dispatches(request: web.Request) -> web.Response:
    """Delete finished dispatches: ``?older_than=7d`` and/or ``?status=FAILED`` (repeatable),
    or ``?all=1``; ``dry_run=1`` names them and deletes nothing. An empty or odd filter is a
    400, never "everything" (issue #21)."""
    query = request.query
    older = query.get("older_than")
    statuses = query.getall("status", [])
    everything = query.get("all")
    if everything not in (None, "1") or query.get("dry_run") not in (None, "0", "1"):
        raise InvalidRequest("all and dry_run take 1 (or 0 for dry_run)")
    if older is None and not statuses and everything != "1":
        raise InvalidRequest("say which: older_than=7d, status=FAILED, or all=1")
    if everything == "1" and (older is not None or statuses):
        raise InvalidRequest("all=1 takes no older_than or status")
    if older is not None and not older.strip() or any(not s.strip() for s in statuses):
        raise InvalidRequest("older_than and status must not be empty")
    dry_run = query.get("dry_run") == "1"
    ids = await dispatches.purge(request.app[STORE], older, statuses, dry_run=dry_run,
                                 owner=owner_filter(request))
    return web.json_response({"matching" if dry_run else "deleted": len(ids), "dispatch_ids": ids})


@routes.post(wire.API + "/triggers")
async def register_trigger(request: web.Request) -> web.Response:
    trigger_id = await request.app[TRIGGERS].register(await _json_body(request),
                                                      user=user_of(request))
    return web.json_response({"trigger_id": trigger_id}, status=201)


@routes.get(wire.API + "/triggers")
async def list_triggers(request: web.Request) -> web.Response:
    active = request.query.get("active") == "1"
    triggers = await request.app[TRIGGERS].listing(active, owner_filter(request))
    return web.json_response({"triggers": triggers})


@routes.get(wire.API + "/triggers/{trigger_id}")
async def get_trigger(request: web.Request) -> web.Response:
    """One trigger: whether it is active, how often it fired, the dispatches it started."""
    return web.json_response(await request.app[TRIGGERS].info(request.match_info["trigger_id"]))


@routes.post(wire.API + "/triggers/{trigger_id}/stop")
async def stop_trigger(request: web.Request) -> web.Response:
    """Stop one trigger: what ``trigger.stop()`` on a registered trigger object asks."""
    service, trigger_id = request.app[TRIGGERS], request.match_info["trigger_id"]
    owner = await service.owner_of(trigger_id)
    if owner is None or not may_see(user_of(request), owner):  # someone else's: as unknown
        raise TriggerNotFound(f"no trigger with id {trigger_id!r}")
    return web.json_response({"stopped": int(await service.stop_one(trigger_id))})


@routes.post(wire.API + "/triggers/stop")
async def stop_triggers(request: web.Request) -> web.Response:
    body = await _json_body(request)
    ids = body.get("dispatch_ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise InvalidRequest("dispatch_ids must be a non-empty list of dispatch ids")
    for i in ids:  # someone else's: 404, as an unknown id
        await owner_of_visible(request, i)
    stopped = await request.app[TRIGGERS].stop(ids)
    return web.json_response({"stopped": stopped})
