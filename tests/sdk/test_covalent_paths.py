"""Covalent's public names at the paths Covalent scripts import them from (#12 item 9)."""

from __future__ import annotations

from pathlib import Path

import pytest

import covalent as ct
from covalent.config import client_config


def test_result_and_errors_at_covalents_private_paths() -> None:
    from covalent._results_manager import Result
    from covalent._shared_files.exceptions import MissingLatticeRecordError

    assert Result is ct.Result
    assert issubclass(MissingLatticeRecordError, ct.errors.DispatchNotFoundError)
    assert issubclass(MissingLatticeRecordError, LookupError)


def test_get_set_reload_config_over_the_config_file(config_dir: Path) -> None:
    assert ct.get_config("dispatcher.address") == "localhost"
    assert ct.get_config(["dispatcher.address", "dispatcher.port"]) == {
        "dispatcher.address": "localhost", "dispatcher.port": 48008}
    assert ct.get_config()["sdk"]["log_level"] == "warning"

    ct.set_config("sdk.enable_logging", "false")
    ct.set_config({"sdk.enable_logging": "true", "sdk.log_level": "debug"})
    ct.reload_config()
    assert ct.get_config("sdk") == {"enable_logging": "true", "log_level": "debug"}
    assert "log_level = \"debug\"" in (config_dir / "covalent.conf").read_text()
    ct.set_config("dispatcher.port", 48111)
    assert client_config().url == "http://localhost:48111"  # where the SDK now sends requests

    from covalent._shared_files.config import get_config

    assert get_config("dispatcher.port") == 48111
    with pytest.raises(KeyError, match="no.such"):
        ct.get_config("no.such")
