"""What `covalent start` is given, from its options or its environment, holds for the whole
life of the data dir: `covalent restart` starts with it again (issue #21). Real processes.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

import covalent as ct
from tests.conftest import free_port
from tests.faults.conftest import Cli
from tests.tasks import big_bytes

pytestmark = [pytest.mark.slow, pytest.mark.processes]


@ct.lattice
def _mib(n):
    return big_bytes(n)


def _blobs(root: Path) -> set[str]:
    return {p.name for p in root.rglob("*") if p.is_file() and p.stat().st_size > 1 << 20}


def test_restart_keeps_the_store_url_given_by_the_environment(cli: Cli, tmp_path: Path) -> None:
    shared = tmp_path / "shared-store"  # a directory every worker reaches (a shared file system)
    started = cli.__class__(dict(cli.env, COVALENT_STORE_URL=str(shared)), cli.data_dir)
    out = started("start", "--port", str(free_port()), "--workers", "1")
    assert out.returncode == 0, out.stdout + out.stderr
    cli.server_pid()
    first = ct.dispatch(_mib)(1)
    assert ct.get_result(first, wait=True).result == b"x" * (1 << 20)
    assert len(_blobs(shared)) == 1 and not _blobs(cli.data_dir)
    saved = cli.data_dir / "server.json"
    assert json.loads(saved.read_text())["store_url"] == str(shared)
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600

    out = cli("restart")  # another shell: no COVALENT_STORE_URL
    assert out.returncode == 0, out.stdout + out.stderr
    cli.server_pid()
    assert ct.get_result(first, wait=True).result == b"x" * (1 << 20)  # still found
    second = ct.dispatch(_mib)(2)
    assert ct.get_result(second, wait=True).result == b"x" * (2 << 20)
    assert len(_blobs(shared)) == 2 and not _blobs(cli.data_dir)

    assert cli("stop").returncode == 0
    elsewhere = tmp_path / "other-store"
    out = cli("start", "--port", str(free_port()), "--workers", "1", "--store-url", str(elsewhere))
    assert out.returncode == 0, out.stdout + out.stderr
    cli.server_pid()
    assert ct.get_result(ct.dispatch(_mib)(3), wait=True).result == b"x" * (3 << 20)
    assert len(_blobs(elsewhere)) == 1
