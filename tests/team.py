"""A dispatcher shared by a team (issue #26), for the tests about users.

``team`` starts a real dispatcher on 127.0.0.1 (random port, in-process Dask cluster, the
test's store: SQLite or PostgreSQL) with a server token (the built-in admin), adds the users
``alice`` and ``bob`` and the revoked ``carol`` through the REST API as that admin, and has
alice run a workflow (``ALICE_WORKFLOW``) through the SDK with her own token, plus a
TimeTrigger on it (an hour apart: it never fires during the test) and a graph preview.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

import covalent as ct
from covalent import wire
from covalent.triggers import TimeTrigger
from dispatcher.app import create_app
from tests.conftest import JSON, in_process_settings, run

ALICE_WORKFLOW = "alices_secret_workflow"


@ct.electron
def double(x: int) -> int:
    return 2 * x


@ct.lattice
def alices_secret_workflow(x: int) -> int:
    return double(x)


@dataclass
class Team:
    client: TestClient
    tokens: dict[str, str]  # admin (the server's token), alice, bob, carol (revoked)
    dispatch_id: str  # alice's
    trigger_id: str  # alice's
    preview_id: str  # alice's

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.client.port}"

    def headers(self, who: str | None, json_body: bool = False) -> dict[str, str]:
        out = dict(JSON) if json_body else {}
        if who is not None:
            out["Authorization"] = f"Bearer {self.tokens[who]}"
        return out

    async def call(self, who: str | None, method: str, path: str, body: Any = None) -> Any:
        """A JSON request as ``who``; the parsed answer (raises on a non-2xx)."""
        data = json.dumps(body).encode() if body is not None else None
        async with self.client.request(method, path, data=data,
                                       headers=self.headers(who, data is not None)) as resp:
            text = await resp.text()
            assert resp.status < 300, (method, path, resp.status, text)
            return json.loads(text)


@pytest.fixture
async def team(config_dir: Path, aiohttp_client: Any, tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Team]:
    from tests import tasks

    settings = replace(in_process_settings(tmp_path / "data"), token=secrets.token_urlsafe(32))
    client = await aiohttp_client(create_app(settings))
    t = Team(client, {"admin": settings.token}, "", "", "")
    for name in ("alice", "bob", "carol"):
        made = await t.call("admin", "POST", wire.API + "/users", {"name": name})
        t.tokens[name] = made["token"]
    await t.call("admin", "POST", wire.API + "/users/carol/revoke", {})
    monkeypatch.setenv("COVALENT_TOKEN", t.tokens["alice"])  # what alice's SDK sends
    result = await run(alices_secret_workflow, t.addr, 21)
    assert result.result == 42
    t.dispatch_id = result.dispatch_id
    trigger = TimeTrigger(time_gap=3600, lattice_dispatch_id=t.dispatch_id).to_dict()
    t.trigger_id = (await t.call("alice", "POST", wire.API + "/triggers",
                                 {"trigger": trigger}))["trigger_id"]
    graph = {"nodes": [{"id": 0, "name": ALICE_WORKFLOW, "kind": "electron"}], "edges": []}
    t.preview_id = (await t.call("alice", "POST", wire.API + "/previews",
                                 {"name": ALICE_WORKFLOW, "graph": graph}))["preview_id"]
    yield t
    tasks.release.set()
