"""The config file is TOML written by a TOML library: nested executor tables survive every
rewrite the SDK and ``covalent start`` make (issue #16 item 6)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from covalent.config import config_path, get_config, read_config, set_config, update_config

WRITTEN_BY_HAND = """\
[executors.gpu]
resources = {GPU = 1, "nvidia.com/mig" = 0.5}
workers = ["gpu-1", "gpu-2"]
pip = ["torch==2.3.1"]

[executors.slurm]
username = "me"
options = {partition = "long", "gres" = "gpu:1"}
"""


def test_nested_executor_tables_survive_rewrites(config_dir: Path) -> None:
    config_dir.mkdir(parents=True)
    config_path().write_text(WRITTEN_BY_HAND)
    before = tomllib.loads(WRITTEN_BY_HAND)
    update_config("dispatcher", {"address": "127.0.0.1", "port": 48123, "token": "t0k"})
    set_config("sdk.log_level", "debug")
    after = tomllib.loads(config_path().read_text())  # valid TOML, read by another parser
    assert after["executors"] == before["executors"]
    assert after["executors"]["gpu"]["resources"] == {"GPU": 1, "nvidia.com/mig": 0.5}
    assert after["dispatcher"] == {"address": "127.0.0.1", "port": 48123, "token": "t0k"}
    assert get_config("executors.slurm.options") == {"partition": "long", "gres": "gpu:1"}
    assert read_config()["sdk"]["log_level"] == "debug"
    assert config_path().stat().st_mode & 0o777 == 0o600
