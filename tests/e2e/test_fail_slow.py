"""Fail-slow in a wide graph: independent branches finish, no node is left RUNNING (#20)."""

from __future__ import annotations

import covalent as ct
from tests.conftest import run


@ct.electron
def fetch(i):
    import time
    time.sleep(0.01 * (i % 5))
    return i


@ct.electron
def parse(x):
    if x == 7:
        raise ValueError("bad record 7")
    return x * 10


@ct.electron
def summarize(xs):
    return sum(xs)


@ct.lattice
def pipeline(n):
    return summarize([parse(fetch(i)) for i in range(n)])


async def test_a_failed_branch_lets_the_other_23_finish(addr: str) -> None:
    for _ in range(3):
        result = await run(pipeline, addr, 24)
        assert result.status == "FAILED"
        statuses = {}
        for node in range(len(result.lattice.transport_graph._graph.nodes) if False else 0):
            pass
        nodes = [result.get_node_result(i) for i in range(24 * 3 + 3)]
        by_name = {}
        for n in nodes:
            by_name.setdefault(n["node_name"], []).append(n["status"])
        assert "RUNNING" not in [n["status"] for n in nodes], by_name
        assert by_name["fetch"] == ["COMPLETED"] * 24, by_name
        assert sorted(by_name["parse"]) == ["COMPLETED"] * 23 + ["FAILED"], by_name
        assert by_name["summarize"] == ["NEW_OBJECT"], by_name
