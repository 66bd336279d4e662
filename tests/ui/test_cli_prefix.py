"""``covalent watch / cancel / status`` with the 8 characters the web UI and ``covalent list``
show, and what ``watch`` says of a dispatch that has ended (issue #24). Real processes."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import pytest

import covalent as ct
from dispatcher.keys import STORE
from dispatcher.state import Status
from dispatcher.store import NewDispatch
from tests import tasks
from tests.conftest import auth_headers
from tests.faults.conftest import Cli
from tests.ui.test_cli_and_link import failing, gated, start

pytestmark = pytest.mark.slow


@ct.electron
def nap(x):
    time.sleep(0.6)
    return x


@ct.lattice
def napping(x):
    return tasks.add(nap(x), 1)


async def test_watch_cancel_and_status_take_the_short_id_and_watch_tells_what_happened(
        cli: Cli, tmp_path: Path) -> None:
    link, _ = start(cli)
    addr = link.split("//")[1].split("/")[0]
    done = await asyncio.to_thread(ct.dispatch(napping, dispatcher_addr=addr), 1)
    await asyncio.to_thread(ct.get_result, done, True, addr)

    out = cli("watch", done[:8])  # long after it ended
    assert out.returncode == 0, out.stdout + out.stderr
    took = re.search(r"nap: 1/1 completed \[(\d+\.\d) s\]", out.stdout)
    assert took and float(took.group(1)) >= 0.5, out.stdout  # how long it ran, not "[0.0 s]"
    assert f"{done}: COMPLETED" in out.stdout

    failed = await asyncio.to_thread(ct.dispatch(failing, dispatcher_addr=addr), 3)
    out = cli("watch", failed[:8])
    assert out.returncode == 1
    assert "ValueError: bad value 3" in out.stdout  # why it failed, not only that it did

    status = cli("status", failed[:8])
    assert status.returncode == 1 and f"failing {failed}: FAILED" in status.stdout
    assert "fail: 0/1 completed, 1 failed" in status.stdout

    started, release = tmp_path / "started", tmp_path / "release"
    running = await asyncio.to_thread(ct.dispatch(gated, dispatcher_addr=addr), 1, str(started), str(release))
    out = cli("cancel", running[:8])
    assert out.returncode == 0 and f"Cancelled dispatch {running}" in out.stdout
    assert cli("status", running[:8]).returncode == 2
    release.touch()

    missing = cli("watch", "ffffffff")  # 4: not 1, which says FAILED
    assert missing.returncode == 4 and "ffffffff" in missing.stderr
    ambiguous = cli("status", "")  # no id: the server's status, as before
    assert ambiguous.returncode == 0 and "Covalent dispatcher: running" in ambiguous.stdout


async def test_a_prefix_names_one_dispatch_or_says_which_it_could_be(dispatcher: Any) -> None:
    store = dispatcher.app[STORE]
    ids = ["12340000-0000-4000-8000-000000000000", "12350000-0000-4000-8000-000000000000"]
    for i in ids:
        await store.create_dispatch(NewDispatch(i, i, "wf", Status.COMPLETED, "2026-01-01T00:00:00+00:00",
                                                '{"nodes":[],"edges":[]}', []), [], {})
    one = await dispatcher.get("/api/v1/resolve/1234", headers=auth_headers())
    assert one.status == 200 and (await one.json())["dispatch_id"] == ids[0]
    both = await dispatcher.get("/api/v1/resolve/123", headers=auth_headers())
    body = await both.json()
    assert both.status == 409 and all(i in body["message"] for i in ids) and "more of the id" in body["message"]
    none = await dispatcher.get("/api/v1/resolve/9999", headers=auth_headers())
    assert none.status == 404 and (await none.json())["error"] == "DispatchNotFound"
    bad = await dispatcher.get("/api/v1/resolve/xyz!", headers=auth_headers())
    assert bad.status == 400
