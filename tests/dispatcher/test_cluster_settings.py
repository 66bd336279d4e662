"""Where the dispatcher's cluster and named executors come from: arguments, then COVALENT_*
variables, then the config file's [dask] and [executors.*] tables (issue #16)."""

from __future__ import annotations

from pathlib import Path

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
