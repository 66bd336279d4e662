"""The rest of Covalent's public API (#22): uncalled electrons as arguments, DepsModule,
get_context, covalent_start/covalent_stop/is_covalent_running, the result node's name."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import covalent as ct
from covalent.wire import NodeKind
from tests.conftest import free_port, run
from tests.faults.conftest import REPO
from tests.tasks import add, two_node


@ct.electron
def apply(f, x):
    return f(x)


@ct.electron
def double(x):
    return 2 * x


def test_an_uncalled_electron_is_a_parameter_holding_the_function() -> None:
    @ct.lattice
    def wf(x):
        return apply(double, x)

    nodes = wf.build_graph(3).nodes
    assert [n.kind for n in nodes] == [NodeKind.ELECTRON, NodeKind.PARAMETER, NodeKind.PARAMETER,
                                       NodeKind.POSTPROCESS]
    assert nodes[1].name.startswith(":parameter:<function double at 0x")  # as Covalent names it
    assert nodes[-1].name == ":postprocess:reconstruct"  # Covalent 0.240's name


async def test_a_task_calls_an_electron_it_was_given_as_a_plain_function(addr: str) -> None:
    @ct.lattice
    def wf(x):
        return apply(double, x), apply(double, apply(double, x))

    result = await run(wf, addr, 5)
    assert result.status == "COMPLETED", result.error
    assert result.result == [10, 20]
    assert [n["node_name"] for n in result.get_all_node_results()].count("double") == 0


def test_get_context_outside_a_task_names_nothing() -> None:
    assert (ct.get_context().dispatch_id, ct.get_context().task_id) == (None, None)


async def test_get_context_inside_a_task_names_its_dispatch_and_node(addr: str) -> None:
    @ct.electron
    def where():
        ctx = ct.get_context()
        return ctx.dispatch_id, ctx.task_id

    @ct.lattice
    def wf():
        return add(1, 2), where()

    result = await run(wf, addr)
    assert result.result[1] == (result.dispatch_id, 3)


def test_deps_module_sends_the_function_by_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that cannot import the module still loads the electron's function."""
    (tmp_path / "mine_only_here.py").write_text(textwrap.dedent("""
        import covalent as ct

        OFFSET = 40

        def helper(x):
            return x + OFFSET

        @ct.electron(deps_module="mine_only_here")
        def task(x):
            return helper(x)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    import mine_only_here  # type: ignore[import-not-found]

    @ct.lattice
    def wf(x):
        return mine_only_here.task(x)

    graph = wf.build_graph(2)
    blob = graph.blobs[graph.nodes[0].fn]  # type: ignore[index]
    load = "import cloudpickle, sys; print(cloudpickle.loads(sys.stdin.buffer.read())(2))"
    out = subprocess.run([sys.executable, "-c", load], input=blob, capture_output=True,
                         timeout=60, cwd="/", env={"PYTHONPATH": str(Path(__file__).parents[2])})
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.strip() == b"42"
    assert repr(ct.DepsModule("mine_only_here")) == "DepsModule('mine_only_here')"


def test_is_covalent_running_is_false_where_nothing_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COVALENT_DISPATCHER_ADDR", f"127.0.0.1:{free_port()}")
    assert ct.is_covalent_running() is False


def test_covalent_start_refuses_what_this_dispatcher_cannot_do() -> None:
    with pytest.raises(ValueError, match="no_cluster: this dispatcher always runs its own Dask"):
        ct.covalent_start(no_cluster=True)


@pytest.mark.slow
@pytest.mark.processes
def test_covalent_start_and_stop_wrap_the_cli_with_the_configs_port(
        tmp_path: Path, config_dir: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    monkeypatch.setenv("COVALENT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parents[2]))
    ct.set_config({"dispatcher.port": port, "dask.num_workers": 1})
    assert ct.is_covalent_running() is False
    try:
        ct.covalent_start(quiet=True)
        assert ct.is_covalent_running() is True
        ct.covalent_start()  # a second start says so and returns
        assert "Covalent server is already running." in capsys.readouterr().out
        from covalent import api
        from covalent.config import client_config

        status = api.request_json(client_config(), "GET", "/status", timeout=10)
        assert client_config().url == f"http://127.0.0.1:{port}"
        assert status["cluster"]["workers"] == 1  # [dask] num_workers of the config file
    finally:
        ct.covalent_stop(quiet=True)
    assert ct.is_covalent_running() is False
    ct.covalent_stop()
    assert "Covalent server is not running." in capsys.readouterr().out


async def test_get_result_takes_covalents_results_dir_and_writes_nothing_there(
        addr: str, tmp_path: Path) -> None:
    # Covalent's get_result has a keyword results_dir (where its client saved assets); a
    # script passing it failed with "unexpected keyword argument".
    dispatch_id = await asyncio.to_thread(ct.dispatch(two_node, dispatcher_addr=addr), 1, 2)
    result = await asyncio.to_thread(ct.get_result, dispatch_id, True, addr,
                                     results_dir=str(tmp_path / "results"))
    assert result.result == 6 and not (tmp_path / "results").exists()


def test_triggers_are_reached_as_ct_triggers_as_in_covalents_quick_start() -> None:
    # Covalent's Quick Start builds ct.triggers.DirTrigger(...) after `import covalent as ct`;
    # it was an AttributeError (the module was reached only by importing it).
    out = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import covalent as ct
        trigger = ct.triggers.DirTrigger(dir_path=".", event_names=["created", "modified"])
        print(type(trigger).__name__, ct.triggers.TimeTrigger(time_gap=5).time_gap)
        """)], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0 and out.stdout.split() == ["DirTrigger", "5.0"], out.stderr


_Pair = collections.namedtuple("_Pair", "x y")


@dataclasses.dataclass
class _Box:
    content: object


@ct.electron
def _one():
    return 1


@ct.electron
def _kind_and_sum(p):
    return type(p).__name__, p.x + p.y


@ct.electron
def _numbers():
    return [1, 2, 3]


async def test_a_namedtuple_of_outputs_is_filled_in_and_keeps_its_type(addr: str) -> None:
    # A namedtuple holding electrons was passed and returned with the electrons themselves in
    # it, unrun: a COMPLETED dispatch whose result held <Electron 'one' node 0>.
    @ct.lattice
    def wf():
        return {"sum": _kind_and_sum(_Pair(_one(), 2)), "pair": _Pair(_one(), 2),
                "plain": _Pair(5, 6)}

    result = await run(wf, addr)
    assert result.status == "COMPLETED", result.error
    assert result.result == {"sum": ("_Pair", 3), "pair": _Pair(1, 2), "plain": _Pair(5, 6)}
    assert type(result.result["pair"]) is _Pair


@pytest.mark.parametrize("body, said", [
    (lambda: _numbers().count(1), "an attribute of the output of '_numbers' is called"),
    (lambda: ct.electron(len, executor=_numbers())([]),  # said "has no truth value"
     "executor= is given the output of '_numbers' .* chosen when the lattice is built"),
    (lambda: _kind_and_sum(_Box(_one())), r"argument 'p' \(a _Box\): the output of '_one' .* "
                                          "is inside an object that is not"),
    (lambda: _Box(_one()), "the lattice's return value: the output of '_one'"),
])
def test_an_output_used_where_it_cannot_be_filled_in_is_a_clear_error(body, said: str) -> None:
    # big().sum() failed on the worker with IndexError; a dataclass holding an electron ran
    # with the electron itself in it.
    with pytest.raises(ct.errors.WorkflowDefinitionError, match=said):
        ct.lattice(body).build_graph()
