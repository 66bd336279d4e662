"""Custom executors (#22): a ``BaseExecutor``/``AsyncBaseExecutor`` subclass has its setup, run
and teardown called inside the node's Dask task, with Covalent's arguments; its output is the
node's output, its exception the node's error, and the task's Dask options still apply."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import covalent as ct
from covalent.executor.base import AsyncBaseExecutor, BaseExecutor
from tests.conftest import auth_headers, run
from tests.faults.conftest import ServerProcess
from tests.tasks import busy_loop, flaky


class Recording(BaseExecutor):
    """Writes what it was called with to ``log``; its output is ten times the electron's."""

    def __init__(self, log: str, **kwargs: Any) -> None:
        self.log = log
        super().__init__(**kwargs)

    def _note(self, what: str) -> None:
        with open(self.log, "a") as fh:
            fh.write(what + "\n")

    def setup(self, task_metadata: dict[str, Any]) -> None:
        self._note("setup")

    def run(self, function: Any, args: list[Any], kwargs: dict[str, Any],
            task_metadata: dict[str, Any]) -> Any:
        self._note("run " + json.dumps({"args": args, "kwargs": kwargs, **task_metadata}))
        print("from run", file=self.task_stdout)
        return 10 * function(*args, **kwargs)

    def teardown(self, task_metadata: dict[str, Any]) -> None:
        self._note("teardown")


class Failing(AsyncBaseExecutor):
    """Async: its run raises after the electron ran; teardown still happens."""

    def __init__(self, log: str) -> None:
        self.log = log
        super().__init__()

    async def run(self, function: Any, args: list[Any], kwargs: dict[str, Any],
                  task_metadata: dict[str, Any]) -> Any:
        function(*args, **kwargs)
        raise LookupError(f"no backend for node {task_metadata['node_id']}")

    async def teardown(self, task_metadata: dict[str, Any]) -> None:
        Path(self.log).write_text("torn down")


class Passing(BaseExecutor):
    def run(self, function: Any, args: list[Any], kwargs: dict[str, Any],
            task_metadata: dict[str, Any]) -> Any:
        return function(*args, **kwargs)


class Counting(BaseExecutor):
    """Keeps what it ran on itself, as plugins keep job handles and remote directories."""

    def __init__(self) -> None:
        self.seen: list[int] = []
        super().__init__()

    def run(self, function: Any, args: list[Any], kwargs: dict[str, Any],
            task_metadata: dict[str, Any]) -> Any:
        self.seen.append(task_metadata["node_id"])
        return (function(*args, **kwargs), list(self.seen))


def node_json(addr: str, dispatch_id: str, node_id: int) -> dict[str, Any]:
    req = urllib.request.Request(f"http://{addr}/api/v1/dispatches/{dispatch_id}/nodes/{node_id}",
                                 headers=auth_headers())
    with urllib.request.urlopen(req, timeout=10) as resp:
        return dict(json.loads(resp.read()))


def test_base_classes_are_where_covalent_has_them() -> None:
    from covalent.executor import AsyncBaseExecutor as A
    from covalent.executor import BaseExecutor as B
    from covalent.executor.executor_plugins.dask import DaskExecutor
    from covalent.executor.executor_plugins.local import LocalExecutor
    from covalent.executor.executor_plugins.remote_executor import RemoteExecutor

    assert (A, B) == (AsyncBaseExecutor, BaseExecutor)
    assert issubclass(DaskExecutor, AsyncBaseExecutor) and issubclass(LocalExecutor, BaseExecutor)
    assert issubclass(RemoteExecutor, AsyncBaseExecutor)
    with pytest.raises(TypeError, match="abstract"):
        BaseExecutor()  # type: ignore[abstract]
    ex = Recording("/tmp/x", retries=2, time_limit=5)
    # Covalent names an executor after its module; both spellings work here
    assert ex.short_name() == ex.short_name == "test_custom_executors"
    assert (ex.retries, ex.time_limit, ex.log) == (2, 5, "/tmp/x")
    assert ex.to_dict()["attributes"]["log"] == "/tmp/x"


async def test_run_is_called_on_the_worker_with_covalents_arguments(addr: str, tmp_path: Path) -> None:
    log = tmp_path / "calls"

    @ct.electron(executor=Recording(str(log)))
    def scale(x, y=1):
        ctx = ct.get_context()
        print("in electron", ctx.task_id)
        return x * y

    @ct.lattice
    def wf(x):
        return scale(x, y=3)

    result = await run(wf, addr, 2)
    assert result.status == "COMPLETED", result.error
    assert result.result == 60  # run's return value is the node's output
    setup, call, teardown = log.read_text().splitlines()
    assert (setup, teardown) == ("setup", "teardown")
    called = json.loads(call.removeprefix("run "))
    assert called["args"] == [2] and called["kwargs"] == {"y": 3}
    assert (called["dispatch_id"], called["node_id"]) == (result.dispatch_id, 0)
    assert os.path.isdir(called["results_dir"])
    node = result.get_node_result(0)
    assert node["output"] == 60 and node["stdout"] == "in electron 0\nfrom run\n"
    graph_node = wf.build_graph(2).nodes[0]  # named by its short_name(); needs no mapping
    assert (graph_node.executor, graph_node.custom) == ("test_custom_executors", "Recording")


async def test_an_exception_in_run_is_the_nodes_error_and_teardown_runs(addr: str,
                                                                        tmp_path: Path) -> None:
    log = tmp_path / "teardown"

    @ct.electron(executor=Failing(str(log)))
    def work(x):
        return x

    @ct.electron
    def other(x):
        return x + 1

    @ct.lattice
    def wf(x):
        return work(x), other(x)

    result = await run(wf, addr, 1)
    assert result.status == "FAILED"
    node = result.get_node_result(0)
    assert node["status"] == "FAILED" and "LookupError: no backend for node 0" in node["error"]
    assert log.read_text() == "torn down"
    assert result.get_node_result(2)["output"] == 2  # fail-slow: the other branch ran


async def test_dask_options_still_apply_to_a_custom_executors_task(addr: str, tmp_path: Path) -> None:
    retried = ct.electron(flaky.function, executor=Passing(retries=1))
    limited = ct.electron(busy_loop.function, executor=Passing(time_limit=0.3))

    @ct.lattice
    def wf(counter, marker):
        return retried(counter, 1), limited(marker)

    result = await run(wf, addr, str(tmp_path / "runs"), str(tmp_path / "loop"))
    assert result.get_node_result(0)["output"] == 2  # failed once, run again by Dask
    node = await asyncio.to_thread(node_json, addr, result.dispatch_id, 0)
    assert node["attempts"] == 2
    looped = [n for n in result.get_all_node_results() if n["node_name"] == "busy_loop"][0]
    assert looped["status"] == "FAILED" and "TimeLimitExceeded" in looped["error"]
    assert (tmp_path / "loop").read_text() == "stopped"


# -- Covalent's "creating a custom executor" how-to, as a user runs it ---------------------------

PLUGIN = '''
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

from covalent.executor.base import BaseExecutor

executor_plugin_name = "StopwatchExecutor"

_EXECUTOR_PLUGIN_DEFAULTS = {"log_path": ""}


class StopwatchExecutor(BaseExecutor):
    def __init__(self, log_path: str = "", **kwargs):
        self.log_path = str(Path(log_path).resolve())
        super().__init__(**kwargs)

    def run(self, function: Callable, args: List, kwargs: Dict, task_metadata: Dict) -> Any:
        began = time.process_time()
        out = function(*args, **kwargs)
        with open(self.log_path, "w") as f:
            f.write(f"node {task_metadata['node_id']} of {task_metadata['dispatch_id']} "
                    f"took {time.process_time() - began}s\\n")
        return out
'''

SCRIPT = '''
import sys
from pathlib import Path

import covalent as ct

sys.path.append(str(Path("./my_executors").resolve()))
from my_executors import StopwatchExecutor

log = "{log}"
watch = StopwatchExecutor(log)

@ct.electron(executor=watch)
def series(x):
    total, fact = 1, 1
    for i in range(1, x):
        fact *= i
        total += 1 / fact
    return total

@ct.lattice(executor=watch)
def workflow(x):
    return series(x)

dispatch_id = ct.dispatch(workflow)(10)
result = ct.get_result(dispatch_id, wait=True)
print(result.status, round(result.result, 6))
print(open(log).read().strip())
'''


@pytest.fixture
def worker_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerProcess]:
    """A dispatcher with 2 worker processes that cannot import the user's executor module."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]),
               COVALENT_CONFIG_DIR=str(tmp_path / "config"))
    server = ServerProcess(tmp_path / "data", env)
    server.start()
    yield server
    server.stop()


@pytest.mark.slow
@pytest.mark.processes
def test_the_how_to_runs_unchanged_with_an_executor_module_workers_cannot_import(
        worker_processes: ServerProcess, tmp_path: Path) -> None:
    work = tmp_path / "user"
    (work / "my_executors").mkdir(parents=True)
    (work / "my_executors" / "__init__.py").write_text("from .stopwatch import StopwatchExecutor\n")
    (work / "my_executors" / "stopwatch.py").write_text(PLUGIN)
    log = tmp_path / "timing.log"
    (work / "how_to.py").write_text(textwrap.dedent(SCRIPT.format(log=log)))
    env = dict(worker_processes.env, COVALENT_DISPATCHER_ADDR=worker_processes.addr)
    out = subprocess.run([sys.executable, "how_to.py"], cwd=work, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    status, line = out.stdout.strip().splitlines()
    assert status == "COMPLETED 2.718282"
    assert line.startswith("node 0 of ") and line.endswith("s")


INSTALLED_PLUGIN = '''
from covalent._shared_files.config import get_config
from covalent._shared_files.logger import app_log
from covalent.executor.executor_plugins.remote_executor import RemoteExecutor

EXECUTOR_PLUGIN_NAME = "FarExecutor"
_EXECUTOR_PLUGIN_DEFAULTS = {"hostname": "far.example.org", "cache_dir": get_config("dispatcher.cache_dir")}


class FarExecutor(RemoteExecutor):
    def __init__(self, hostname=None, **kwargs):
        super().__init__(**kwargs)
        self.hostname = hostname or get_config("executors.far_plugin.hostname")

    async def run(self, function, args, kwargs, task_metadata):
        app_log.debug("running on %s", self.hostname)
        return function(*args, **kwargs)
'''


def test_an_installed_plugin_package_is_the_class_its_name_gives(tmp_path: Path) -> None:
    """As Covalent loads plugins: entry point group covalent.executor.executor_plugins, the
    module's EXECUTOR_PLUGIN_NAME, its _EXECUTOR_PLUGIN_DEFAULTS in the config."""
    (tmp_path / "far_plugin.py").write_text(INSTALLED_PLUGIN)
    info = tmp_path / "covalent_far_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: covalent-far-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[covalent.executor.executor_plugins]\nfar = far_plugin\n")
    check = textwrap.dedent("""
        import covalent as ct
        from covalent._executors import executor_spec
        from covalent.executor import FarExecutor, SlurmExecutor
        far = FarExecutor()
        print(type(far).__module__, far.hostname, executor_spec(far))
        print(type(SlurmExecutor()).__module__)  # not installed: the stand-in
    """)
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                             [str(tmp_path), str(Path(__file__).resolve().parents[2])]),
                             COVALENT_CONFIG_DIR=str(tmp_path / "config")))
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.splitlines()
    assert first == ("far_plugin far.example.org ExecutorSpec(name='far_plugin', options={}, "
                     "plugin='', custom='FarExecutor')")
    assert second == "covalent.executor"


async def test_every_task_has_an_executor_object_of_its_own(addr: str) -> None:
    # The object unpickled on a worker was shared by that worker's tasks (a shallow copy):
    # state a run kept reached the other nodes, and the next dispatch's.
    counting = Counting()

    @ct.electron(executor=counting)
    def square(i):
        return i * i

    @ct.lattice
    def wf(n):
        return [square(i) for i in range(n)]

    for _ in range(2):
        result = await run(wf, addr, 6)
        assert result.status == "COMPLETED", result.error
        assert [(out, len(seen)) for out, seen in result.result] == [(i * i, 1) for i in range(6)]


async def test_a_node_that_leaves_its_directory_moves_no_other_node(addr: str,
                                                                      tmp_path: Path) -> None:
    # A node's chdir into a directory it then removed left every later node of its workers
    # without a working directory (os.getcwd() raised; deps_bash said "shell-init: error").
    here = os.getcwd()

    @ct.electron
    def wander(d):
        os.makedirs(d)
        os.chdir(d)
        os.rmdir(d)
        return d

    @ct.electron
    def where(_):
        return os.getcwd()

    @ct.lattice
    def wf(d):
        return where(wander(d))

    result = await run(wf, addr, str(tmp_path / "gone"))
    assert (result.status, result.result) == ("COMPLETED", here)
    assert os.getcwd() == here
