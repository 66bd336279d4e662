"""Executors on the client: Covalent's attributes are kept, Dask options reach the graph, and
an executor this engine does not run never breaks an import (issues #12 item 5, #16)."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import covalent as ct
from covalent.wire import WorkflowGraph


def test_covalent_attributes_of_local_and_dask_executors_are_kept() -> None:
    local = ct.executor.LocalExecutor(log_stdout="out.log", log_stderr="err.log", workdir="/tmp/w",
                                      create_unique_workdir=True, time_limit=30, retries=1)
    assert (local.log_stdout, local.log_stderr, local.workdir, local.create_unique_workdir) == (
        "out.log", "err.log", "/tmp/w", True)
    assert (local.time_limit, local.retries, local.short_name()) == (30, 1, "local")
    dask = ct.executor.DaskExecutor(scheduler_address="tcp://10.0.0.1:8786", conda_env="ml",
                                    cache_dir="/c", current_env_on_conda_fail=True)
    assert (dask.scheduler_address, dask.conda_env, dask.cache_dir, dask.short_name) == (
        "tcp://10.0.0.1:8786", "ml", "/c", "dask")
    assert dask.log_stdout == "stdout.log" and dask.time_limit == -1 and dask.retries == 0
    assert dask.to_dict()["attributes"]["scheduler_address"] == "tcp://10.0.0.1:8786"


def test_dask_options_of_an_executor_object_reach_the_node() -> None:
    gpu = ct.executor.DaskExecutor(retries=2, resources={"GPU": 1}, workers=["big-1"],
                                   priority=10, time_limit=60)

    @ct.electron(executor=gpu)
    def train(x: int) -> int:
        return x

    @ct.electron
    def plain(x: int) -> int:
        return x

    @ct.lattice
    def wf() -> list[int]:
        first = train(1)
        return [first, plain(2), first[0]]  # type: ignore[index]

    g = WorkflowGraph.from_json(wf.build_graph().to_json(), [])
    by_name = {n.name: n for n in g.nodes}
    assert by_name["train"].options == {"retries": 2, "time_limit": 60.0, "resources": {"GPU": 1.0},
                                        "workers": ["big-1"], "priority": 10}
    assert by_name["plain"].options == {} and by_name["plain"].executor == "dask"
    getitem = next(n for n in g.nodes if n.kind == "getitem")
    assert getitem.options == {}  # x[0] runs anywhere, whatever its parent asked for


@pytest.mark.parametrize("kwargs, message", [
    ({"retries": -1}, "retries must be an integer >= 0"),
    ({"priority": 5000}, "priority must be an integer from -1000 to 1000"),
    ({"resources": {"GPU": 0}}, "resource 'GPU' must be a positive number"),
    ({"time_limit": "1h"}, "time_limit must be a number of seconds"),
])
def test_a_bad_option_is_a_clear_error_where_it_is_written(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ct.executor.DaskExecutor(**kwargs)


@pytest.mark.parametrize("executor", [ct.executor.DaskExecutor, ct.executor.LocalExecutor])
def test_a_mistyped_option_is_an_error_not_an_option_ignored(executor: type) -> None:
    # time_limt=1 was kept as an attribute: the node ran past the limit meant for it.
    with pytest.raises(TypeError, match="unexpected keyword argument 'time_limt'; did you mean "
                                        "'time_limit'"):
        executor(time_limt=1)
    with pytest.raises(TypeError, match="'queue'; it takes allow_other_workers, cache_dir"):
        executor(queue="gpu")


def test_one_worker_named_by_a_string_is_that_worker() -> None:
    # workers="big-1" was split into its letters, and the task waited for workers b, i, g, ...
    assert ct.executor.DaskExecutor(workers="big-1").task_options().to_json() == {
        "workers": ["big-1"]}


def test_plugin_executors_and_unknown_names_decorate_and_are_marked_on_the_node() -> None:
    slurm = ct.executor.SlurmExecutor(username="me", address="hpc.example.org",
                                      options={"partition": "gpu"}, time_limit=600)
    assert (slurm.username, slurm.address, slurm.short_name) == ("me", "hpc.example.org", "slurm")
    assert pickle.loads(pickle.dumps(slurm)).options == {"partition": "gpu"}
    from covalent.executor import AWSBatchExecutor

    class LooksLikeOne:  # neither ours nor Covalent's: must not silently run as "dask"
        short_name = "dask"

    @ct.electron(executor=slurm)
    def on_slurm() -> int:
        return 1

    @ct.electron(executor="awsbatch")
    def by_name() -> int:
        return 2

    @ct.electron(executor=AWSBatchExecutor(vcpu=2))
    def by_object() -> int:
        return 3

    @ct.electron(executor=LooksLikeOne())
    def impostor() -> int:
        return 4

    @ct.lattice
    def wf() -> tuple[int, ...]:
        return on_slurm(), by_name(), by_object(), impostor()

    nodes = {n.name: n for n in wf.build_graph().nodes}
    assert (nodes["on_slurm"].executor, nodes["on_slurm"].plugin) == ("slurm", "SlurmExecutor")
    assert nodes["on_slurm"].options == {"time_limit": 600.0}
    assert (nodes["by_name"].executor, nodes["by_name"].plugin) == ("awsbatch", "")
    assert (nodes["by_object"].executor, nodes["by_object"].plugin) == ("awsbatch", "AWSBatchExecutor")
    assert (nodes["impostor"].executor, nodes["impostor"].plugin) == ("dask", "LooksLikeOne")


def test_a_covalent_script_naming_plugins_imports(tmp_path: Path) -> None:
    script = tmp_path / "wf.py"
    script.write_text(textwrap.dedent("""
        import covalent as ct
        from covalent.executor import SlurmExecutor

        slurm = SlurmExecutor(username="me", address="hpc", remote_workdir="/scratch")

        @ct.electron(executor=slurm)
        def a(): return 1

        @ct.electron(executor="awsbatch")
        def b(): return 2

        @ct.lattice(executor="gpu", workflow_executor="slurm")
        def wf(): return a(), b()

        print("imported", slurm.short_name, len(wf.build_graph().nodes))
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "imported slurm 3"


def test_executor_module_has_no_made_up_lowercase_names() -> None:
    with pytest.raises(AttributeError):
        ct.executor.slurm  # noqa: B018
