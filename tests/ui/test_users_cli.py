"""``covalent user add/list/revoke`` in a real subprocess against a live dispatcher (#26)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from covalent import wire
from tests.team import Team, team  # noqa: F401
from tests.ui.conftest import REPO


async def covalent(t: Team, who: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``covalent ARGS`` as ``who`` (their token in COVALENT_TOKEN), at the team's server."""
    env = dict(os.environ, COVALENT_DISPATCHER_ADDR=t.addr, COVALENT_TOKEN=t.tokens[who])
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "dispatcher.cli", "user", *args], env=env,
        cwd=REPO, text=True, capture_output=True, timeout=60, check=False)


async def test_an_admin_adds_lists_and_revokes_users(team: Team) -> None:
    added = await covalent(team, "admin", "add", "dave")
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    assert len(token) >= 43 and "\n" not in token and "shown only now" in added.stderr
    team.tokens["dave"] = token
    assert await team.call("dave", "GET", wire.API + "/whoami") == {"name": "dave", "admin": False}

    again = await covalent(team, "admin", "add", "dave")
    assert again.returncode == 1 and "already" in again.stderr and token not in again.stderr
    bad = await covalent(team, "admin", "add", "Dave Smith")
    assert bad.returncode == 1 and "lower-case" in bad.stderr
    boss = await covalent(team, "admin", "add", "erin", "--admin")
    assert boss.returncode == 0, boss.stderr
    team.tokens["erin"] = boss.stdout.strip()
    assert await team.call("erin", "GET", wire.API + "/whoami") == {"name": "erin", "admin": True}

    listed = await covalent(team, "erin", "list")  # an added admin may manage users too
    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert sorted(lines) == ["alice", "bob", "carol", "dave", "erin"]
    assert lines["erin"].split()[1] == "yes" and lines["dave"].split()[1] == "no"
    assert lines["dave"].split()[3] == "-" and lines["carol"].split()[3] != "-"  # revoked
    assert lines["alice"].endswith("ago") and lines["bob"].endswith("never")
    assert token not in listed.stdout

    refused = await covalent(team, "bob", "add", "mallory")  # not an admin
    assert refused.returncode == 1 and "admins only" in refused.stderr

    revoked = await covalent(team, "admin", "revoke", "dave")
    assert revoked.returncode == 0 and "Revoked dave" in revoked.stdout
    async with team.client.get(wire.API + "/whoami", headers=team.headers("dave")) as resp:
        assert resp.status == 401
    unknown = await covalent(team, "admin", "revoke", "nobody")
    assert unknown.returncode == 1 and "no user named 'nobody'" in unknown.stderr
    builtin = await covalent(team, "admin", "revoke", "admin")  # was "no user named 'admin'"
    assert builtin.returncode == 1 and "is the built-in admin" in builtin.stderr
