"""Electron arguments made only of plain values (lists, tuples, dicts of constants).

Regression tests for the "no task for what costs nothing" change, which answered
``500 KeyError`` at submit and left the dispatch RUNNING forever (issue #12, item 1).
"""

from __future__ import annotations

import asyncio

import covalent as ct
from dispatcher.keys import RUNNER
from tests.conftest import fetched, run
from tests.tasks import add


@ct.electron
def total(xs):
    return sum(xs)


@ct.electron
def describe(x, opts=None):
    return f"{x}:{opts!r}"


@ct.electron
def keys_and_values(d):
    return sorted(d.items())


@ct.electron
@ct.lattice
def sub_total(xs):
    return total(xs)


async def test_a_list_of_constants(addr: str) -> None:
    @ct.lattice
    def wf():
        return total([1, 2, 3])

    result = await run(wf, addr)
    assert result.status == "COMPLETED", result.error
    assert result.result == 6
    assert result.get_node_result(1)["node_name"] == ":electron_list:"
    assert result.get_node_result(1)["output"] == [1, 2, 3]


async def test_a_tuple_of_constants_as_a_keyword(addr: str) -> None:
    @ct.lattice
    def wf():
        return describe("x", opts=(1, 2))

    result = await run(wf, addr)
    assert result.status == "COMPLETED", result.error
    assert result.result == "x:[1, 2]"  # a tuple reaches an electron as a list, as in Covalent


async def test_tuples_and_sets_become_lists_as_in_covalent(addr: str) -> None:
    @ct.electron
    def kinds(*args, **kwargs):
        return [type(a).__name__ for a in args], {k: type(v).__name__ for k, v in kwargs.items()}

    @ct.electron
    def pair():
        return (1, "a")  # what an electron returns keeps its type

    @ct.lattice
    def wf():
        a, b = pair()
        return (kinds((1, 2), {3}, [4], frozenset({5}), opts=(add(1, 1),)),
                (a, b), {"t": (1, 2), "s": {a}}, pair())

    result = await run(wf, addr)
    assert result.status == "COMPLETED", result.error
    assert result.result == [
        (["list", "list", "list", "frozenset"], {"opts": "list"}),
        [1, "a"], {"t": [1, 2], "s": [1]}, (1, "a")]


async def test_a_dict_of_constants(addr: str) -> None:
    @ct.lattice
    def wf():
        return keys_and_values({"a": 1, "b": [2, 3]})

    result = await run(wf, addr)
    assert result.status == "COMPLETED", result.error
    assert result.result == [("a", 1), ("b", [2, 3])]


async def test_a_lattice_input_list_passed_on(addr: str) -> None:
    @ct.lattice
    def wf(xs):
        return total(xs)

    result = await run(wf, addr, [4, 5, 6])
    assert result.status == "COMPLETED", result.error
    assert result.result == 15


async def test_nested_empty_and_mixed_lists(addr: str) -> None:
    @ct.lattice
    def wf():
        return total([]), total([total([1, 2]), 3]), describe([[1], [2, 3]]), total([add(1, 1), 4])

    result = await run(wf, addr)
    assert result.status == "COMPLETED", result.error
    assert result.result == [0, 6, "[[1], [2, 3]]:None", 6]


async def test_the_same_inside_a_sublattice(addr: str) -> None:
    @ct.lattice
    def wf(xs):
        return sub_total(xs), sub_total([7, 8])

    result = await run(wf, addr, [1, 2])
    assert result.status == "COMPLETED", result.error
    assert result.result == [3, 15]


async def test_a_submission_that_cannot_reach_dask_is_failed_not_running(dispatcher, addr) -> None:
    await dispatcher.app[RUNNER].client.close()  # the cluster is gone: the submit must fail

    @ct.lattice
    def wf():
        return total([1, 2])

    dispatch_id = await asyncio.to_thread(ct.dispatch(wf, dispatcher_addr=addr))
    result = await fetched(dispatch_id, addr)
    assert result.status == "FAILED"
    assert "could not submit this dispatch" in result.error
    assert dispatch_id not in dispatcher.app[RUNNER].runs
