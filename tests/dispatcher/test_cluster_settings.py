"""Where the dispatcher's cluster and named executors come from: arguments, then COVALENT_*
variables, then the config file's [dask] and [executors.*] tables (issue #16)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dispatcher.__main__ import parse_args, settings_from_args
from dispatcher.app import create_app
from dispatcher.settings import Settings

CONFIG = """\
[dask]
cluster = "dask_jobqueue.SLURMCluster"
cluster_kwargs = {cores = 4, memory = "8GB", job_extra_directives = ["--exclusive"]}
adapt = [0, 20]
scheduler_address = "tcp://10.0.0.1:8786"  # Covalent writes this; it means nothing here

[executors.gpu]
resources = {GPU = 1}
time_limit = 600
"""


@pytest.fixture
def config(config_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("COVALENT_CLUSTER", "COVALENT_CLUSTER_KWARGS", "COVALENT_ADAPT",
                 "COVALENT_SCHEDULER_ADDRESS", "COVALENT_NO_WORKER_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COVALENT_TOKEN", "t")
    config_dir.mkdir(parents=True)
    path = config_dir / "covalent.conf"
    path.write_text(CONFIG)
    return path


def test_the_config_file_names_the_cluster_manager_and_the_executors(config: Path) -> None:
    s = settings_from_args(parse_args([]))
    assert s.cluster.cluster_class == "dask_jobqueue.SLURMCluster"
    assert s.cluster.cluster_kwargs == {"cores": 4, "memory": "8GB",
                                        "job_extra_directives": ["--exclusive"]}
    assert s.cluster.adapt == (0, 20) and s.cluster.address is None
    assert s.executors == {"gpu": {"resources": {"GPU": 1}, "time_limit": 600}}
    assert s.config_source == str(config)
    assert s.no_worker_timeout is None  # adaptive: workers may still come


def test_arguments_win_over_variables_which_win_over_the_file(config: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COVALENT_ADAPT", "1:3")
    s = settings_from_args(parse_args(["--cluster", "distributed.LocalCluster",
                                       "--cluster-kwargs", '{"n_workers": 0}']))
    assert s.cluster.cluster_class == "distributed.LocalCluster"
    assert s.cluster.cluster_kwargs == {"n_workers": 0} and s.cluster.adapt == (1, 3)
    s = settings_from_args(parse_args(["--adapt", "2:4"]))
    assert s.cluster.adapt == (2, 4)


def test_the_embedded_cluster_fails_tasks_no_worker_can_run_after_a_minute() -> None:
    assert Settings().no_worker_timeout == 60.0
    assert Settings.from_env(no_worker_timeout=0).no_worker_timeout is None
    assert Settings.from_env(address="tcp://127.0.0.1:1").no_worker_timeout is None


@pytest.mark.parametrize("overrides, message", [
    ({"address": "tcp://127.0.0.1:1", "cluster_class": "distributed.LocalCluster"},
     "--scheduler-address uses a cluster someone else runs"),
    ({"cluster_class": "LocalCluster"}, "takes an import path such as dask_jobqueue.SLURMCluster"),
    ({"cluster_class": "distributed.NoSuchCluster"}, "distributed has no 'NoSuchCluster'"),
    ({"executors": {"gpu": {"retries": "two"}}}, r"\[executors.gpu\].*retries must be an integer"),
    ({"executors": {"gpu": 3}}, r"must be a table \(\[executors.gpu\]\)"),
])
def test_contradicting_or_malformed_settings_stop_the_server_naming_the_problem(
        tmp_path: Path, overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_app(Settings.from_env(data_dir=tmp_path, **overrides))


def test_the_public_url_is_what_workers_call_back_and_a_host_requests_may_name(
        config_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COVALENT_TOKEN", "t")
    monkeypatch.delenv("COVALENT_PUBLIC_URL", raising=False)
    assert settings_from_args(parse_args(["--port", "48100"])).worker_url == "http://127.0.0.1:48100"
    s = settings_from_args(parse_args(["--public-url", "http://LB.example:8443/"]))
    assert s.public_url == s.worker_url == "http://LB.example:8443"
    monkeypatch.setenv("COVALENT_PUBLIC_URL", "http://balancer:80")
    assert settings_from_args(parse_args([])).worker_url == "http://balancer:80"
    for bad in ("balancer:80", "https://balancer", "http://", "http://balancer:port",
                "http://balancer/covalent"):
        with pytest.raises(ValueError, match="--public-url takes http://host:port"):
            settings_from_args(parse_args(["--public-url", bad]))


async def test_a_dispatcher_behind_a_balancer_tells_the_workers_its_url_and_answers_its_host(
        config_dir: Path, tmp_path: Path, aiohttp_client: Any) -> None:
    from dataclasses import replace

    from dispatcher.app import RUNNER
    from dispatcher.worker.contact import WorkerContext
    from tests.conftest import in_process_settings

    app = create_app(replace(in_process_settings(tmp_path / "data"),
                             public_url="http://lb.example:8080"))
    client = await aiohttp_client(app)
    runner = app[RUNNER]
    assert runner.public_url == "http://lb.example:8080"
    contexts = await runner.client.run(
        lambda dask_worker: dask_worker.plugins[WorkerContext.name].url)
    assert set(contexts.values()) == {"http://lb.example:8080"}
    ok = await client.get("/api/v1/health", headers={"Host": "lb.example:8080"})
    assert ok.status == 200, await ok.text()
    status = await (await client.get("/api/v1/status")).json()
    assert status["cluster"]["callback"] == "http://lb.example:8080"
    other = await client.get("/api/v1/health", headers={"Host": "elsewhere.example"})
    assert other.status == 403, other.status
