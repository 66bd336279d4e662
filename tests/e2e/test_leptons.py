"""Leptons end to end: Python functions by name, shell commands and scripts, C functions."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

import covalent as ct
from tests.conftest import fetched
from covalent.errors import WorkflowDefinitionError
from tests.tasks import add, identity


async def run(lattice: Any, addr: str, *args: Any, **kwargs: Any) -> Any:
    dispatch_id = await asyncio.to_thread(ct.dispatch(lattice, dispatcher_addr=addr), *args, **kwargs)
    return await fetched(dispatch_id, addr)


async def test_python_lepton_records_a_node_and_runs_on_the_worker(addr: str) -> None:
    task = ct.Lepton(language="python", library_name="operator", function_name="mul")

    @ct.lattice
    def wf(x: int) -> Any:
        return add(task(x, 3), 1)

    result = await run(wf, addr, 2)
    assert result.result == 7, result.error
    assert result.get_node_result(0)["node_name"] == "mul"
    assert result.get_node_result(0)["output"] == 6


async def test_bash_lepton_with_named_outputs(addr: str) -> None:
    task = ct.Lepton(
        language="bash",
        command="echo computing; product=$(({num_1} * {num_2}))",
        argtypes=[(int, ct.Lepton.INPUT_OUTPUT), (int, ct.Lepton.INPUT_OUTPUT), (int, ct.Lepton.OUTPUT)],
        named_outputs=["num_1", "num_2", "product"],
    )

    @ct.lattice
    def wf(**kwargs: Any) -> Any:
        return task(**kwargs)

    result = await run(wf, addr, num_1=7, num_2=8)
    assert result.result == (7, 8, 56), result.error
    assert result.get_node_result(0)["stdout"] == "computing\n"


async def test_bash_script_function_with_positional_arguments(addr: str, tmp_path: Path) -> None:
    script = tmp_path / "lib.sh"
    script.write_text('greet() { total="$1-$2"; }\n')
    task = ct.Lepton("bash", library_name=str(script), function_name="greet",
                     argtypes=[(str, ct.Lepton.OUTPUT)], named_outputs=["total"])

    @ct.lattice
    def wf() -> Any:
        return task("a b", identity(2))

    result = await run(wf, addr)
    assert result.result == "a b-2", result.error


async def test_bash_decorator_builds_its_command_on_the_worker(addr: str, tmp_path: Path) -> None:
    out = tmp_path / "echo.txt"
    src = tmp_path / "src.txt"
    src.write_text("copied")

    @ct.leptons.bash(display_name="write", files=[ct.fs.FileTransfer(str(src), str(tmp_path / "dst.txt"))],
                     call_before=ct.DepsBash(f"echo dep > {tmp_path}/dep.txt"))
    def write(x: int) -> str:
        return f"echo {x} > {out} && cat {tmp_path}/dst.txt {tmp_path}/dep.txt"

    @ct.lattice
    def wf() -> Any:
        return write(add(2, 3))

    result = await run(wf, addr)
    assert result.status == "COMPLETED", result.error
    assert out.read_text() == "5\n"
    node = next(n for n in result.get_all_node_results() if n["node_name"] == "write")
    assert (node["output"], node["stdout"]) == (None, "copieddep\n")


async def test_failing_command_fails_the_node_with_its_stderr(addr: str) -> None:
    @ct.leptons.bash
    def broken() -> str:
        return "echo bad >&2; exit 3"

    @ct.lattice
    def wf() -> Any:
        return broken()

    result = await run(wf, addr)
    assert result.status == "FAILED"
    assert "exited with 3: bad" in result.get_node_result(0)["error"]


def test_leptons_refuse_retval_keywords_when_the_lattice_is_built() -> None:
    @ct.leptons.bash(call_before=[ct.DepsCall(lambda: 1, retval_keyword="x")])
    def task(x: Any = None) -> str:
        return "true"

    @ct.lattice
    def wf() -> Any:
        return task()

    with pytest.raises(WorkflowDefinitionError, match="retval_keyword"):
        wf.build_graph()


def test_invalid_leptons_are_refused() -> None:
    with pytest.raises(WorkflowDefinitionError, match="not supported"):
        ct.Lepton("fortran", library_name="x", function_name="y")
    with pytest.raises(WorkflowDefinitionError, match="library_name or command"):
        ct.Lepton("bash")
    with pytest.raises(WorkflowDefinitionError, match="function_name"):
        ct.Lepton("python", library_name="os")
    with pytest.raises(WorkflowDefinitionError, match="'command' incompatible"):
        ct.Lepton("C", command="ls")


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler to build the test library")
async def test_c_lepton_returns_its_output_arguments(addr: str, tmp_path: Path) -> None:
    import ctypes

    src = tmp_path / "lib.c"
    src.write_text("void sum(int *a, int n, int *out) { *out = 0; for (int i = 0; i < n; i++) *out += a[i]; }\n")
    lib = tmp_path / "libsum.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    task = ct.Lepton("C", library_name=str(lib), function_name="sum",
                     argtypes=[(ctypes.POINTER(ctypes.c_int), ct.Lepton.INPUT),
                               (ctypes.c_int, ct.Lepton.INPUT),
                               (ctypes.POINTER(ctypes.c_int), ct.Lepton.OUTPUT)])

    @ct.lattice
    def wf() -> Any:
        return task([1, 2, 3], 3)

    result = await run(wf, addr)
    assert result.result == 6, result.error
