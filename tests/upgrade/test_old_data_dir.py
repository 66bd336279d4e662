"""A data dir written by an older version (commit 27c8847, made by ``make_data_dir_27c8847.py``)
opens, says what it upgrades, and every dispatch in it reads back as that version read it.

Before schema versions, such a data dir started without a word and every completed result
raised ``ModuleNotFoundError: covalent._assembly`` (issue #21 item 5). The fixture is copied
to a temp dir first: a test never changes the committed one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import covalent as ct
from dispatcher.app import create_app
from dispatcher.settings import ClusterSettings, Settings
from dispatcher.store.schema import LATEST
from tests.faults.conftest import REPO
from tests.upgrade.make_data_dir_27c8847 import encode

FIXTURE = Path(__file__).parent / "data-27c8847"
EXPECTED: dict[str, Any] = json.loads((FIXTURE / "expected.json").read_text())


@pytest.fixture
def old_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(FIXTURE / "data", tmp_path / "data")
    monkeypatch.setenv("COVALENT_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("COVALENT_TOKEN", raising=False)
    monkeypatch.delenv("COVALENT_DB_URL", raising=False)
    return tmp_path / "data"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _covalent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dispatcher.cli", *args], capture_output=True,
                          text=True, timeout=60, cwd=REPO)


def test_a_dry_run_says_what_would_change_and_changes_nothing(old_data_dir: Path) -> None:
    before = _digest(old_data_dir / "dispatches.db")
    out = _covalent("db", "upgrade", "--dry-run", "--data-dir", str(old_data_dir))
    assert out.returncode == 0, out.stderr
    assert "Schema version: none yet" in out.stdout and f"this version of covalent-dask: {LATEST}" in out.stdout
    assert "covalent._assembly" in out.stdout  # migration 3, named for what it fixes
    assert [line.split()[0] for line in out.stdout.splitlines() if line.startswith("  ")] == \
        [str(v) for v in range(1, LATEST + 1)]
    assert "nothing was changed" in out.stdout
    assert _digest(old_data_dir / "dispatches.db") == before
    assert sorted(p.name for p in old_data_dir.iterdir()) == ["blobs", "dispatches.db"]

    out = _covalent("db", "upgrade", "--data-dir", str(old_data_dir))
    assert out.returncode == 0 and f"Done: schema version {LATEST}" in out.stdout, out.stderr
    out = _covalent("db", "upgrade", "--dry-run", "--data-dir", str(old_data_dir))
    assert f"Schema version: {LATEST}" in out.stdout and "Up to date" in out.stdout


async def test_every_old_dispatch_reads_back_and_a_pending_one_runs(
        old_data_dir: Path, aiohttp_client: Any) -> None:
    files_before = {p.name for p in (old_data_dir / "blobs").rglob("*") if p.is_file()}
    settings = Settings(data_dir=old_data_dir, port=0, cluster=ClusterSettings(
        processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None))
    client = await aiohttp_client(create_app(settings))
    addr = f"127.0.0.1:{client.port}"

    def read(dispatch_id: str) -> Any:
        result = ct.get_result(dispatch_id, wait=False, dispatcher_addr=addr)
        return result, {str(n["node_id"]): n for n in result.get_all_node_results()}

    for name, want in EXPECTED.items():
        if name == "pending":
            continue
        result, nodes = await asyncio.to_thread(read, want["dispatch_id"])
        assert (str(result.status), result.error or "") == (want["status"], want["error"]), name
        assert encode(result.result) == want["result"], name
        assert {i: (n["node_name"], str(n["status"]), encode(n["output"]))
                for i, n in nodes.items()} == \
            {i: (n["name"], n["status"], n["output"]) for i, n in want["nodes"].items()}, name
    assert EXPECTED["big"]["result"]["bytes"] == 307_200  # a large output, from a blob file

    # The old pickles of gathered values went once nothing used them; what is left is whole.
    files_after = {p.name for p in (old_data_dir / "blobs").rglob("*") if p.is_file()}
    assert files_after < files_before
    for f in (old_data_dir / "blobs").rglob("*"):
        assert not f.is_file() or b"covalent._assembly" not in f.read_bytes()

    pending = EXPECTED["pending"]["dispatch_id"]  # stored with disable_run by the old version
    await asyncio.to_thread(ct.redispatch(pending, dispatcher_addr=addr, is_pending=True))
    ran = await asyncio.to_thread(ct.get_result, pending, True, addr)
    assert (ran.status, ran.result) == (ct.status.COMPLETED, 101)
