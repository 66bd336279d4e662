"""Dependencies end to end: anywhere Covalent accepts them, and what they inject."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import covalent as ct
from tests.conftest import fetched


async def run(lattice: Any, addr: str) -> Any:
    dispatch_id = await asyncio.to_thread(ct.dispatch(lattice, dispatcher_addr=addr))
    return await fetched(dispatch_id, addr)


def _identity(y: Any) -> Any:
    return y


async def test_repeated_retval_keywords_inject_a_list_in_call_order(addr: str) -> None:
    @ct.electron(call_before=[ct.DepsCall(_identity, args=[i], retval_keyword="y") for i in (1, 2, 3)])
    def many(y: Any = None) -> Any:
        return y

    @ct.electron(call_before=[ct.DepsCall(_identity, args=["hey"], retval_keyword="greeting")])
    def one(greeting: Any = None) -> Any:
        return f"{greeting}, whats up?"

    @ct.lattice
    def wf() -> Any:
        return [one()] + many()

    result = await run(wf, addr)
    assert result.result == ["hey, whats up?", 1, 2, 3], result.error


@pytest.mark.slow  # pip starts a Python process (about 1 s), even with nothing to install
async def test_bash_and_pip_deps_inside_call_before_and_call_after(addr: str, tmp_path: Path) -> None:
    log = tmp_path / "log.txt"

    @ct.electron(call_before=[ct.DepsPip(packages=["cloudpickle"]), ct.DepsBash(f"echo before >> {log}")],
                 call_after=[ct.DepsBash(f"echo after >> {log}")])
    def task() -> str:
        return log.read_text()

    @ct.lattice
    def wf() -> Any:
        return task()

    result = await run(wf, addr)
    assert result.result == "before\n", result.error
    assert log.read_text() == "before\nafter\n"


async def test_a_failing_call_after_fails_the_node(addr: str) -> None:
    @ct.electron(call_after=ct.DepsBash("echo oops >&2; exit 5"))
    def task() -> int:
        return 1

    @ct.lattice
    def wf() -> Any:
        return task()

    result = await run(wf, addr)
    node = result.get_node_result(0)
    assert result.status == "FAILED" and "exited with 5: oops" in node["error"]
    assert node["stderr"].startswith("oops\nTraceback (most recent call last):\n")
    assert node["stderr"].endswith("exited with 5: oops\n")
