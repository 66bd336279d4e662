"""``covalent user add NAME [--admin]``, ``covalent user list``, ``covalent user revoke NAME``.

They talk to the running dispatcher (``/api/v1/users``), as an admin: the token of the config
file ``covalent start`` wrote (the built-in admin), or ``COVALENT_TOKEN`` set to an admin
user's token, at the config's address (``COVALENT_DISPATCHER_ADDR``). Through the server,
because the server owns its database (on PostgreSQL it holds it alone) and each server reads a
user's row at every request, so a revoked token is refused at once. ``add`` prints the new
token once: it is stored only as its sha256, and nobody can show it again.
"""

from __future__ import annotations

import json

import click

from covalent import api
from covalent.config import client_config
from covalent.errors import CovalentError

from .cli_dispatches import age


@click.group()
def user() -> None:
    """Users of a shared dispatcher: a token each (admins only)."""


def _call(method: str, path: str, body: dict[str, object] | None = None) -> dict[str, object]:
    cfg = client_config()
    try:
        out: dict[str, object] = api.request_json(
            cfg, method, path, body=json.dumps(body or {}).encode() if method == "POST" else None)
    except CovalentError as exc:
        raise click.ClickException(f"{exc} (at {cfg.url})") from None
    return out


@user.command()
@click.argument("name")
@click.option("--admin", is_flag=True, help="An admin: sees and manages everyone's dispatches "
              "and the users.")
def add(name: str, admin: bool) -> None:
    """Add a user and print its token (shown this once)."""
    out = _call("POST", "/users", {"name": name, "admin": admin})
    click.echo(f"Added {'admin ' if admin else ''}user {out['name']}. Its token (shown only "
               "now; give it to them, they set COVALENT_TOKEN or the config's token):",
               err=True)
    click.echo(str(out["token"]))


@user.command("list")
def list_users() -> None:
    """Every user: name, admin, created, revoked, last used."""
    rows = _call("GET", "/users")["users"]
    assert isinstance(rows, list)
    if not rows:
        click.echo("No users: only the built-in admin (the server's own token).")
        return
    width = max(4, *(len(str(r["name"])) for r in rows))
    click.echo(f"{'NAME':{width}}  ADMIN  {'CREATED':25}  {'REVOKED':25}  LAST USED")
    for r in rows:
        used = f"{age(r['last_used_at'])} ago" if r["last_used_at"] else "never"
        click.echo(f"{r['name']:{width}}  {'yes' if r['admin'] else 'no':5}  "
                   f"{_seconds(r['created_at']):25}  {_seconds(r['revoked_at']) or '-':25}  {used}")


def _seconds(stamp: str | None) -> str:
    """An ISO time to the second, as the columns are wide (``...T20:10:01.151573+00:00`` ->
    ``...T20:10:01+00:00``).

    >>> _seconds("2026-12-07T07:16:54.151573+00:00"), _seconds(None)
    ('2026-12-07T07:16:54+00:00', '')
    """
    if not stamp:
        return ""
    head, dot, rest = stamp.partition(".")
    if not dot:
        return stamp
    zone = rest.lstrip("0123456789")
    return head + zone


@user.command()
@click.argument("name")
def revoke(name: str) -> None:
    """Revoke a user's token: refused from its next request on (for good)."""
    out = _call("POST", f"/users/{name}/revoke")
    click.echo(f"Revoked {out['name']} at {out['revoked_at']}.")
