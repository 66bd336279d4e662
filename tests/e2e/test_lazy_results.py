"""``get_result`` downloads records and the final result; node outputs only when first read."""

from __future__ import annotations

import asyncio

import covalent as ct
from covalent import wire
from tests.conftest import auth_headers
from tests.tasks import add, noise

KIB = 64  # over the inline limit: each part is a blob of its own in the store


@ct.electron
def sizes(parts):
    return [len(p) for p in parts]


@ct.lattice
def parts_and_sizes(n, kib):
    return sizes([noise(kib) for _ in range(n)])


def _output_requests(seen: list[tuple[str, str]], dispatch_id: str) -> list[tuple[str, str]]:
    base = f"{wire.API}/dispatches/{dispatch_id}"
    return [(m, p) for m, p in seen if p.startswith(base) and p.endswith(("/outputs", "/output"))]


async def test_node_outputs_are_downloaded_when_first_read_in_one_request(
        addr: str, requests_seen: list[tuple[str, str]]) -> None:
    dispatch_id = await asyncio.to_thread(ct.dispatch(parts_and_sizes, dispatcher_addr=addr), 3, KIB)
    result = await asyncio.to_thread(ct.get_result, dispatch_id, True, addr)
    assert result.status == ct.status.COMPLETED and result.result == [KIB << 10] * 3
    assert _output_requests(requests_seen, dispatch_id) == []  # nothing but records and result

    first = next(n["node_id"] for n in result._nodes if n["name"] == "noise")
    one = await asyncio.to_thread(lambda: result.get_node_result(first)["output"])
    assert isinstance(one, bytes) and len(one) == KIB << 10
    assert _output_requests(requests_seen, dispatch_id) == [
        ("POST", f"{wire.API}/dispatches/{dispatch_id}/outputs")]
    again = await asyncio.to_thread(lambda: result.get_node_result(first)["output"])
    assert again == one and len(_output_requests(requests_seen, dispatch_id)) == 1  # kept

    outputs = await asyncio.to_thread(result.get_all_node_outputs)
    parts = [v for k, v in outputs.items() if k.startswith("noise(")]
    assert len(parts) == 3 and len({bytes(p) for p in parts}) == 3  # three distinct blobs
    assert all(len(p) == KIB << 10 for p in parts) and one in parts
    assert len(_output_requests(requests_seen, dispatch_id)) == 2  # the rest, in one request


@ct.lattice
def many_then_large(n, kib):
    small = [add(i, 1) for i in range(n)]
    return small, noise(kib), [add(i, 2) for i in range(n)]


async def test_reading_every_node_in_a_loop_takes_a_request_per_hundreds_of_small_outputs(
        addr: str, requests_seen: list[tuple[str, str]]) -> None:
    n = 300
    dispatch_id = await asyncio.to_thread(ct.dispatch(many_then_large, dispatcher_addr=addr), n, 200)
    result = await asyncio.to_thread(ct.get_result, dispatch_id, True, addr)
    assert result.status == ct.status.COMPLETED

    def every_node() -> list[dict]:
        out, i = [], 0
        while True:  # as a Covalent user walks a dispatch's nodes
            try:
                out.append(result.get_node_result(i))
            except KeyError:
                return out
            i += 1
    nodes = await asyncio.to_thread(every_node)
    adds = [n["output"] for n in nodes if n["node_name"] == "add"]
    assert adds == [i + 1 for i in range(n)] + [i + 2 for i in range(n)]
    [large] = [n["output"] for n in nodes if n["node_name"] == "noise"]
    assert len(large) == 200 << 10
    # 2 x 300 small outputs a few hundred at a time, the 200 KiB one on its own (it was one
    # request per node: 22 s for a 1,000-node fan-out's 2,003 nodes)
    assert 3 <= len(_output_requests(requests_seen, dispatch_id)) <= 5


async def test_without_intermediate_outputs_only_the_result_is_downloaded(
        addr: str, requests_seen: list[tuple[str, str]]) -> None:
    dispatch_id = await asyncio.to_thread(ct.dispatch(parts_and_sizes, dispatcher_addr=addr), 2, KIB)
    await asyncio.to_thread(ct.get_result, dispatch_id, True, addr)
    requests_seen.clear()

    result = await asyncio.to_thread(
        lambda: ct.get_result(dispatch_id, dispatcher_addr=addr, intermediate_outputs=False))
    assert result.result == [KIB << 10] * 2
    outputs = await asyncio.to_thread(result.get_all_node_outputs)
    assert [v for k, v in outputs.items() if k.startswith("noise(")] == [None, None]
    assert _output_requests(requests_seen, dispatch_id) == []
    assert [m for m, _ in requests_seen] == ["GET"]  # one request: records and result

    bare = await asyncio.to_thread(
        lambda: ct.get_result(dispatch_id, dispatcher_addr=addr, workflow_output=False,
                              intermediate_outputs=False))
    assert bare.status == ct.status.COMPLETED and bare.get_node_result(0)["status"] == "COMPLETED"
    assert bare.result is None  # workflow_output=False


def _add(a, b):
    return a + b


@ct.lattice
def with_sublattice(a, b):
    return sizes([ct.electron(ct.lattice(_add))(a=a, b=b)])


async def test_get_result_keywords_as_covalents_granular_test(addr: str) -> None:
    # Covalent's results_manager_test.py::test_granular_get_result, with plain outputs (#12 item 9)
    dispatch_id = await asyncio.to_thread(ct.dispatch(with_sublattice, dispatcher_addr=addr),
                                          a=[1], b=[2, 3])

    def get(**kw):
        return ct.get_result(dispatch_id, dispatcher_addr=addr, **kw)

    none = await asyncio.to_thread(get, wait=True, workflow_output=False,
                                   intermediate_outputs=False, sublattice_results=False)
    assert none.result is None and none.status == "COMPLETED"

    def node0(result):
        node = result.get_node_result(0)
        sub = node["sublattice_result"]
        return node["output"], sub.result if sub is not None else "no sublattice result"

    plain = await asyncio.to_thread(get, intermediate_outputs=False, sublattice_results=False)
    assert plain.result == [3] and await asyncio.to_thread(node0, plain) == (None, "no sublattice result")
    subs = await asyncio.to_thread(get, intermediate_outputs=False, sublattice_results=True)
    assert subs.result == [3] and await asyncio.to_thread(node0, subs) == (None, [1, 2, 3])
    every = await asyncio.to_thread(get, intermediate_outputs=True, sublattice_results=False)
    assert await asyncio.to_thread(node0, every) == ([1, 2, 3], "no sublattice result")


async def test_one_output_streams_from_the_store_and_a_gathering_node_names_its_parts(
        dispatcher, addr: str) -> None:
    dispatch_id = await asyncio.to_thread(ct.dispatch(parts_and_sizes, dispatcher_addr=addr), 2, KIB)
    result = await asyncio.to_thread(ct.get_result, dispatch_id, True, addr)
    headers = auth_headers()
    nodes = {n["name"]: n["node_id"] for n in result._nodes}

    resp = await dispatcher.get(f"{wire.API}/dispatches/{dispatch_id}/nodes/{nodes['noise']}/output",
                                headers=headers)
    assert resp.status == 200 and len(await resp.read()) > KIB << 10  # the pickled bytes

    gathering = next(n["node_id"] for n in result._nodes if n["name"].startswith(":electron_list:"))
    resp = await dispatcher.get(f"{wire.API}/dispatches/{dispatch_id}/nodes/{gathering}/output",
                                headers=headers)
    assert resp.status == 200 and "gather" in await resp.json()

    resp = await dispatcher.post(f"{wire.API}/dispatches/{dispatch_id}/outputs",
                                 json={"nodes": ["zero"]}, headers=headers)
    assert resp.status == 400 and "node ids" in (await resp.json())["message"]
    resp = await dispatcher.get(f"{wire.API}/dispatches/{dispatch_id}/nodes/999/output",
                                headers=headers)
    assert resp.status == 404
    resp = await dispatcher.post(f"{wire.API}/dispatches/{dispatch_id}/outputs",
                                 json={"nodes": [nodes["noise"], 999, -1, 10**26, 2**31]},
                                 headers=headers)
    body = await resp.json()  # (10**26 was a 500: no database column holds it)
    assert resp.status == 404 and body["error"] == "NodeNotFound", body
    assert f"has no nodes [999, -1, {10**26}, {2**31}]" in body["message"]
    unknown = "00000000-0000-4000-8000-000000000000"
    resp = await dispatcher.post(f"{wire.API}/dispatches/{unknown}/outputs",
                                 json={"nodes": [0]}, headers=headers)
    assert resp.status == 404 and (await resp.json())["error"] == "DispatchNotFound"
    resp = await dispatcher.get(f"{wire.API}/dispatches/{unknown}/nodes/0", headers=headers)
    assert resp.status == 404 and (await resp.json())["error"] == "DispatchNotFound"
    resp = await dispatcher.get(f"{wire.API}/dispatches/{dispatch_id}/nodes/999", headers=headers)
    assert resp.status == 404 and (await resp.json())["error"] == "NodeNotFound"
