"""Bursts of dispatches, cancel/complete races, and bad input of every kind, on a live server."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import covalent as ct
from covalent import wire
from covalent._dispatch import build_submission
from covalent.config import client_config
from tests.tasks import add, multiply

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}


@ct.lattice
def small(x):
    return multiply(add(x, 1), 2)


async def http(addr: str, method: str, path: str, body: bytes | None = None,
               ctype: str = "application/json") -> tuple[int, Any]:
    """One request from a thread, so the server on this event loop can answer it."""
    return await asyncio.to_thread(_http, addr, method, path, body, ctype)


def _http(addr: str, method: str, path: str, body: bytes | None = None,
          ctype: str = "application/json") -> tuple[int, Any]:
    path = urllib.parse.quote(path, safe="/?=&%;")  # as any client sends a non-ASCII path
    req = urllib.request.Request(f"http://{addr}{wire.API}{path}", data=body, method=method,
                                 headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def test_200_dispatches_from_20_threads_all_complete(addr: str) -> None:
    answered: list[float] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def poll_status() -> None:  # the server keeps answering status requests throughout
        while not stop.is_set():
            t = time.perf_counter()
            try:
                code, _ = _http(addr, "GET", "/status")
                assert code == 200
                answered.append(time.perf_counter() - t)
            except BaseException as exc:  # noqa: BLE001 - reported by the assert below
                errors.append(exc)
            stop.wait(0.05)

    def one(i: int) -> tuple[str, Any, str]:
        dispatch_id = ct.dispatch(small, dispatcher_addr=addr)(i)
        r = ct.get_result(dispatch_id, wait=True, dispatcher_addr=addr)
        return dispatch_id, r.result, str(r.status)

    poller = threading.Thread(target=poll_status)
    poller.start()
    try:
        with ThreadPoolExecutor(20) as pool:
            out = await asyncio.to_thread(lambda: list(pool.map(one, range(200))))
    finally:
        stop.set()
        await asyncio.to_thread(poller.join, 30)  # the server runs on this loop: never block it
    assert [r for _, r, _ in out] == [(i + 1) * 2 for i in range(200)]
    assert {s for _, _, s in out} == {"COMPLETED"}
    assert len({d for d, _, _ in out}) == 200
    assert not errors and answered
    code, body = await http(addr, "GET", "/dispatches?status=RUNNING")
    assert code == 200 and json.loads(body)["dispatches"] == []


async def test_cancel_racing_completion_200_times_leaves_consistent_records(addr: str) -> None:
    def race(i: int) -> tuple[str, str, list[str], Any]:
        dispatch_id = ct.dispatch(small, dispatcher_addr=addr)(i)
        try:
            ct.cancel(dispatch_id, dispatcher_addr=addr)
        except ct.errors.DispatchStateError:
            pass  # it completed first: a late cancel is refused, not applied
        r = ct.get_result(dispatch_id, wait=True, dispatcher_addr=addr)
        again = ct.get_result(dispatch_id, dispatcher_addr=addr)
        assert again.status == r.status  # final is final
        nodes = [str(n["status"]) for n in _nodes(r)]
        return dispatch_id, str(r.status), nodes, r.result

    with ThreadPoolExecutor(10) as pool:
        out = await asyncio.to_thread(lambda: list(pool.map(race, range(200))))
    bad = []
    for dispatch_id, status, nodes, result in out:
        if status == "COMPLETED":
            ok = set(nodes) == {"COMPLETED"} and result is not None
        elif status == "CANCELLED":
            ok = "RUNNING" not in nodes and "NEW_OBJECT" not in nodes
        else:
            ok = False
        if not ok:
            bad.append((dispatch_id, status, nodes))
    assert bad == []
    assert {s for _, s, _, _ in out} <= {"COMPLETED", "CANCELLED"}


def _nodes(r: Any) -> list[dict[str, Any]]:
    out = []
    i = 0
    while True:
        try:
            out.append(r.get_node_result(i))
        except (IndexError, KeyError, LookupError):
            return out
        i += 1


ID_LIKE = ["../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
           "/etc/passwd", "a" * 300, "%00", "x;rm%20-rf%20%2F"]


@pytest.mark.parametrize("bad_id", ID_LIKE)
async def test_path_like_ids_are_4xx_on_every_endpoint(addr: str, bad_id: str) -> None:
    endpoints = [("GET", "/dispatches/{}"), ("GET", "/dispatches/{}/status"),
                 ("GET", "/dispatches/{}/nodes/0"), ("POST", "/dispatches/{}/cancel"),
                 ("POST", "/dispatches/{}/start"), ("POST", "/dispatches?redispatch_of={}")]
    for method, template in endpoints:
        body = b"{}" if method == "POST" else None
        code, err = await http(addr, method, template.format(bad_id), body)
        assert 400 <= code < 500, (method, template, code, err)
        assert set(err) == {"error", "message"}
    code, _ = await http(addr, "GET", "/health")
    assert code == 200


async def test_truncated_non_utf8_and_oversized_bodies(addr: str) -> None:
    body = build_submission(small, (1,), {}, dispatch_id="8c1fd8b9-4a5e-4a61-9b0c-1f4ad0c2a0a1",
                            disable_run=False)
    for cut in (3, 10, len(body) // 2, len(body) - 1):
        code, err = await http(addr, "POST", "/dispatches", body[:cut], wire.CONTENT_TYPE)
        assert code == 400 and err["error"] == "InvalidRequest", (cut, err)
    code, err = await http(addr, "POST", "/dispatches/8c1fd8b9-4a5e-4a61-9b0c-1f4ad0c2a0a1/cancel",
                      b"\xff\xfe{")
    assert code in (400, 404), err
    code, err = await http(addr, "POST", "/triggers", b"\xff\xfe\x00")
    assert code == 400 and "UTF-8" in err["message"]
    # the intact body still works: the failed attempts stored nothing half-way
    code, _ = await http(addr, "POST", "/dispatches", body, wire.CONTENT_TYPE)
    assert code == 201


async def test_a_client_with_another_python_is_refused_at_submit(addr: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from covalent import _dispatch

    monkeypatch.setattr(_dispatch, "_client_versions",
                        lambda: {"python": "3.9.1", "cloudpickle": "1.0.0"})
    with pytest.raises(ct.errors.IncompatibleClientError, match="3.9.1.*on the workers"):
        await asyncio.to_thread(ct.dispatch(small, dispatcher_addr=addr), 1)
    code, body = await http(addr, "GET", "/dispatches")
    assert json.loads(body)["dispatches"] == []  # nothing stored


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(header=st.dictionaries(
    st.sampled_from(["dispatch_id", "graph", "inputs", "lattice", "name", "client", "triggers",
                     "disable_run", "blob_sizes"]), json_values, max_size=9),
       blobs=st.lists(st.binary(max_size=16), max_size=3),
       endpoint=st.sampled_from(["/dispatches", "/triggers", "/triggers/stop",
                                 "/dispatches/8c1fd8b9-4a5e-4a61-9b0c-1f4ad0c2a0a1/cancel"]))
async def test_generated_bodies_get_4xx_json_and_the_server_keeps_serving(
        addr: str, header: dict[str, Any], blobs: list[bytes], endpoint: str) -> None:
    if endpoint == "/dispatches":
        body = wire.pack(header, blobs)
        ctype = wire.CONTENT_TYPE
    else:
        body, ctype = json.dumps(header).encode(), "application/json"
    code, err = await http(addr, "POST", endpoint, body, ctype)
    assert code < 500, err
    if code >= 400:
        assert set(err) == {"error", "message"} and err["message"]
    code, _ = await http(addr, "GET", "/status")
    assert code == 200


UUID = "8c1fd8b9-4a5e-4a61-9b0c-1f4ad0c2a0a1"


def _frame(header_json: str) -> bytes:
    """A frame whose header is this raw JSON text plus zero blobs (blob_sizes spliced in)."""
    head = header_json.rstrip()
    head = head[:-1] + (',' if head.strip() != "{}" else "") + '"blob_sizes":[]}'
    raw = head.encode("utf-8", "surrogatepass")
    return wire.MAGIC + len(raw).to_bytes(4, "big") + raw


def _graph_json(node_id: str = "0", name: str = '"f"', edge: str = "0") -> str:
    return ('{"nodes":[{"id":%s,"name":%s,"kind":"electron","fn":0},'
            '{"id":1,"name":":postprocess:","kind":"postprocess","value":0}],'
            '"edges":[[%s,1,"node:0","kwarg",null]]}' % (node_id, name, edge))


DEEP = "[" * 100_000 + "]" * 100_000
MALFORMED = [  # (method, path, body, content type): each once answered 500
    ("POST", "/dispatches", _frame('{"dispatch_id":"%s","graph":%s,"inputs":0,"lattice":0}'
                                   % (UUID, _graph_json(node_id="1e400"))), wire.CONTENT_TYPE),
    ("POST", "/dispatches", _frame('{"dispatch_id":"%s","graph":%s,"inputs":0,"lattice":0}'
                                   % (UUID, _graph_json(node_id="9" * 5000))), wire.CONTENT_TYPE),
    ("POST", "/dispatches", _frame('{"dispatch_id":"%s","graph":%s,"inputs":0,"lattice":0}'
                                   % (UUID, _graph_json(edge="1e400"))), wire.CONTENT_TYPE),
    ("POST", "/dispatches", _frame('{"dispatch_id":"%s","graph":%s}' % (UUID, DEEP)),
     wire.CONTENT_TYPE),
    ("POST", "/triggers", DEEP.encode(), "application/json"),
    ("POST", "/triggers/stop", ('{"dispatch_ids":%s}' % DEEP).encode(), "application/json"),
    ("POST", f"/dispatches/{UUID}/cancel", ('{"task_ids":%s}' % DEEP).encode(), "application/json"),
    ("POST", f"/dispatches/{UUID}/cancel", ('{"task_ids":[%s]}' % ("9" * 5000)).encode(),
     "application/json"),
    ("GET", f"/dispatches/{UUID}/nodes/\u00b2", None, ""),  # "²".isdigit() is True
    ("POST", "/triggers", json.dumps({"trigger": {"name": "DirTrigger", "dir_path": "/tmp",
                                                  "event_names": ["created"],
                                                  "lattice_dispatch_id": UUID}})
     .replace('"event_names"', '"batch_size": 1e400, "event_names"').encode(), "application/json"),
    ("POST", "/triggers", json.dumps({"trigger": {"name": "x", "lattice_dispatch_id": UUID},
                                      "pickled": "bm90IGEgcGlja2xl"}).encode(), "application/json"),
]


@pytest.mark.parametrize("case", range(len(MALFORMED)))
async def test_each_malformed_request_once_answered_500_is_a_4xx(addr: str, case: int) -> None:
    if case >= len(MALFORMED) - 2:  # the trigger cases need the dispatch to exist
        await asyncio.to_thread(_pending_with_id, addr, UUID)
    method, path, body, ctype = MALFORMED[case]
    code, err = await http(addr, method, path, body, ctype or "application/json")
    assert 400 <= code < 500, err
    assert set(err) == {"error", "message"} and err["message"]
    assert (await http(addr, "GET", "/health"))[0] == 200


def _pending_with_id(addr: str, dispatch_id: str) -> None:
    from covalent import _client
    from covalent.config import client_config

    body = build_submission(small, (1,), {}, dispatch_id=dispatch_id, disable_run=True)
    _client.request(client_config(addr), "POST", "/dispatches", body=body,
                    content_type=wire.CONTENT_TYPE)


async def test_surrogates_in_lattice_and_node_names_are_stored_escaped(addr: str) -> None:
    header = ('{"dispatch_id":"%s","name":"lat\\udc80","graph":%s,"inputs":0,"lattice":0,'
              '"disable_run":true,"blob_sizes":[1]}' % (UUID, _graph_json(name='"f\\udc80"')))
    raw = header.encode()
    frame = wire.MAGIC + len(raw).to_bytes(4, "big") + raw + b"x"
    code, err = await http(addr, "POST", "/dispatches", frame, wire.CONTENT_TYPE)
    assert code == 201, err
    code, listing = await http(addr, "GET", "/dispatches")
    [row] = json.loads(listing)["dispatches"]
    assert row["name"] == "lat\\udc80"  # the lone surrogate, written as its escape
    code, node = await http(addr, "GET", f"/dispatches/{UUID}/nodes/0")
    assert json.loads(node)["name"] == "f\\udc80"


ATOMS = ["1e400", "-1e400", "9" * 5000, '"\\udc80"', '"\u00b2"', "null", "true", "0", "-1",
         "1.5", '"x"', '"8c1fd8b9-4a5e-4a61-9b0c-1f4ad0c2a0a1"', "[]", "{}"]
json_text = st.recursive(
    st.sampled_from(ATOMS) | st.integers().map(str) | st.text(max_size=8).map(json.dumps),
    lambda inner: (st.lists(inner, max_size=4).map(lambda xs: "[" + ",".join(xs) + "]")
                   | st.dictionaries(st.sampled_from(["id", "name", "kind", "fn", "value", "nodes",
                                                      "edges", "task_ids", "dispatch_ids",
                                                      "trigger", "pickled", "batch_size"]),
                                     inner, max_size=5)
                   .map(lambda d: "{" + ",".join(f'"{k}":{v}' for k, v in d.items()) + "}")),
    max_leaves=16)


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=json_text, depth=st.sampled_from([0, 0, 0, 3000]),
       endpoint=st.sampled_from(["/dispatches", "/triggers", "/triggers/stop",
                                 f"/dispatches/{UUID}/cancel"]),
       node=st.sampled_from(["0", "\u00b2", "1e400", "9" * 40, "-1", "٣"]))
async def test_generated_raw_json_never_gets_a_5xx(addr: str, text: str, depth: int, endpoint: str,
                                                    node: str) -> None:
    text = "[" * depth + text + "]" * depth
    if endpoint == "/dispatches":
        body = _frame('{"dispatch_id":"%s","graph":%s,"name":%s,"inputs":0,"lattice":0}'
                      % (UUID, text, text))
        ctype = wire.CONTENT_TYPE
    else:
        body, ctype = text.encode("utf-8", "surrogatepass"), "application/json"
    code, err = await http(addr, "POST", endpoint, body, ctype)
    assert code < 500, err
    code, err = await http(addr, "GET", f"/dispatches/{UUID}/nodes/{node}")
    assert code < 500, err


async def test_a_connection_left_mid_request_is_replaced_not_reused(addr: str) -> None:
    """A request interrupted between sending and reading (a cancel raised into a sublattice's
    thread) left this thread's kept-alive connection 'Request-sent': the next request from that
    thread raised http.client.CannotSendRequest (seen as a sublattice node FAILED)."""
    from covalent import _client

    def run() -> dict[str, object]:
        cfg = client_config(addr)
        assert _client.request_json(cfg, "GET", "/health")["status"] == "ok"
        conn = _client._connection(cfg.url)  # what the interrupted request leaves behind
        conn.putrequest("GET", "/api/v1/health")
        conn.endheaders()
        return dict(_client.request_json(cfg, "GET", "/health"))

    assert (await asyncio.to_thread(run))["status"] == "ok"
