"""Dependencies on the client and on a direct call: where they are accepted, what they inject."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

import covalent as ct
from covalent._deps import call_with_hooks
from covalent.errors import ReservedRetvalKeywordError, WorkflowDefinitionError


def _one() -> int:
    return 1


def test_bash_and_pip_deps_are_accepted_in_call_before_and_call_after() -> None:
    bash, pip = ct.DepsBash("true"), ct.DepsPip([])

    @ct.electron(call_before=[pip, bash], call_after=bash)
    def task() -> int:
        return 1

    assert task.metadata["call_before"] == [pip, bash]
    assert task.metadata["call_after"] == [bash]


def test_anything_else_in_call_before_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="call_before takes DepsCall, DepsBash or DepsPip"):
        ct.electron(call_before=["echo hi"])  # type: ignore[list-item]


def test_the_files_keyword_is_reserved_unless_overridden() -> None:
    with pytest.raises(ReservedRetvalKeywordError) as info:
        ct.DepsCall(_one, retval_keyword="files")
    assert info.value.keyword == "files" and isinstance(info.value, RuntimeError)
    assert pickle.loads(pickle.dumps(info.value)).keyword == "files"
    assert ct.DepsCall(_one, retval_keyword="files", override_reserved_retval_keys=True)


def test_hooks_run_in_covalent_order_and_inject_lists_for_repeated_keywords(tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "log"
    hooks = {
        "deps_bash": ct.DepsBash([f"echo bash >> {log}"]),
        "call_before": [
            ct.DepsBash(f"echo before >> {log}"),
            ct.DepsCall(lambda: 1, retval_keyword="y"),
            ct.DepsCall(lambda: "only", retval_keyword="z"),
            ct.DepsCall(lambda: 2, retval_keyword="y"),
        ],
        "call_after": [ct.DepsBash(f"echo after >> {log}")],
    }

    def fn(x: int, y: list[int], z: str) -> tuple[int, list[int], str]:
        with log.open("a") as fh:
            fh.write("fn\n")
        return x, y, z

    assert call_with_hooks(fn, [0], {}, hooks) == (0, [1, 2], "only")
    assert log.read_text().split() == ["bash", "before", "fn", "after"]


def test_a_failing_command_in_call_before_stops_the_call(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="exited with 4"):
        call_with_hooks(lambda: 1, [], {}, {"call_before": [ct.DepsBash("exit 4")]})


def test_injected_keywords_need_no_argument_and_make_no_edge() -> None:
    @ct.electron(call_before=[ct.DepsCall(_one, retval_keyword="y")])
    def needs_y(x: int, y: int) -> int:  # no default: the worker injects it
        return x + y

    @ct.lattice
    def wf() -> int:
        return needs_y(1)

    graph = wf.build_graph()
    assert [e.name for e in graph.edges if e.dst == 0] == ["x"]


def test_a_lattice_default_call_before_also_counts_as_injected() -> None:
    @ct.electron
    def needs_y(y: int) -> int:
        return y

    @ct.lattice(call_before=[ct.DepsCall(_one, retval_keyword="y")])
    def wf() -> int:
        return needs_y()

    wf.build_graph()

    @ct.lattice
    def bare() -> int:
        return needs_y()

    with pytest.raises(WorkflowDefinitionError, match="missing a required argument: 'y'"):
        bare.build_graph()
