from __future__ import annotations

import asyncio

import covalent as ct
from tests.conftest import fetched


@ct.electron
def add(x, y):
    return x + y


@ct.electron
def sum_all(xs):
    return sum(xs)


@ct.electron
def split(xs):
    return xs[: len(xs) // 2], xs[len(xs) // 2 :]


@ct.lattice
def wf(n):
    parts = [add(i, 1) for i in range(n)]
    total = add(sum_all(parts), 0)
    a, b = split(parts)
    return {"total": total, "first": parts[0], "halves": [a, b]}


async def test_issue_example(addr: str) -> None:
    dispatch_id = await asyncio.to_thread(ct.dispatch(wf, dispatcher_addr=addr), 10)
    result = await fetched(dispatch_id, addr)
    assert result.status == ct.status.COMPLETED, result.error
    assert result.result["total"] == 55
    assert result.result["first"] == 1
    assert result.result["halves"] == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]]
