"""``covalent list``, ``covalent watch ID`` and ``covalent cancel ID``: dispatches from a terminal.

They talk to the running dispatcher through the SDK's REST client (address and token from the
config file, as ``ct.dispatch`` does). ``watch`` draws one progress bar per electron name
(``covalent._progress``; plain lines when not a terminal) and exits with the dispatch's outcome:
0 COMPLETED, 1 FAILED, 2 CANCELLED; Ctrl-C stops watching, never the dispatch (130).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any, NoReturn

import click

from covalent import _progress, api
from covalent.config import client_config
from covalent.errors import CovalentError, DispatcherUnavailableError
from covalent.wire.status import Status

EXIT_CODES = {Status.COMPLETED: 0, Status.FAILED: 1, Status.CANCELLED: 2}


def _fail(exc: CovalentError) -> NoReturn:
    cfg = client_config()
    if isinstance(exc, DispatcherUnavailableError):
        raise click.ClickException(f"no dispatcher answers at {cfg.url} (`covalent start` starts one)")
    raise click.ClickException(str(exc))


def age(iso: str | None, now: datetime | None = None) -> str:
    """How long ago, for people.

    >>> now = datetime(2026, 1, 2, tzinfo=UTC)
    >>> age("2026-01-01T23:59:30+00:00", now), age("2026-01-01T22:00:00+00:00", now), age(None)
    ('30s', '2h', '')
    """
    if not iso:
        return ""
    try:
        then = datetime.fromisoformat(iso)
    except ValueError:
        return ""
    then = then if then.tzinfo else then.replace(tzinfo=UTC)
    s = max(((now or datetime.now(UTC)) - then).total_seconds(), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{int(s // size)}{unit}"
    return f"{int(s)}s"


@click.command("list")
@click.option("-n", "--limit", type=int, default=20, show_default=True, help="How many, newest first.")
@click.option("--status", default=None, type=click.Choice([str(s) for s in
              (Status.RUNNING, Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.NEW_OBJECT)]))
@click.option("-q", "--search", default="", help="Only dispatches whose name or id contains this.")
def list_dispatches(limit: int, status: str | None, search: str) -> None:
    """Recent dispatches: id, name, status, completed/total electrons, age."""
    query: dict[str, Any] = {"limit": limit, "q": search}
    if status:
        query["status"] = status
    try:
        out = api.request_json(client_config(), "GET", "/listing", query=query)
    except CovalentError as exc:
        _fail(exc)
    rows = out["dispatches"]
    if not rows:
        click.echo("No dispatches.")
        return
    name_w = min(max(len(r["name"]) for r in rows), 40)
    click.echo(f"{'ID':36}  {'NAME':{name_w}}  {'STATUS':10}  {'DONE/TOTAL':>10}  AGE")
    for r in rows:
        done = f"{r['done']}/{r['total']}"
        click.echo(f"{r['dispatch_id']:36}  {r['name'][:name_w]:{name_w}}  {r['status']:10}  "
                   f"{done:>10}  {age(r['created_at'])}")
    if out["total"] > len(rows):
        click.echo(f"({len(rows)} of {out['total']}; -n shows more)")


@click.command()
@click.argument("dispatch_id")
def watch(dispatch_id: str) -> None:
    """Follow a dispatch: a progress bar per electron name until it ends.

    Exit code: 0 COMPLETED, 1 FAILED, 2 CANCELLED. Ctrl-C stops watching, not the dispatch.
    """
    try:
        status = _progress.watch(client_config(), dispatch_id, sys.stdout)
    except KeyboardInterrupt:
        click.echo(f"\nStopped watching; dispatch {dispatch_id} goes on "
                   f"(`covalent cancel {dispatch_id}` stops it).", err=True)
        sys.exit(130)
    except CovalentError as exc:
        _fail(exc)
    sys.exit(EXIT_CODES.get(status, 1))


@click.command()
@click.argument("dispatch_id")
def cancel(dispatch_id: str) -> None:
    """Cancel a running dispatch (its unfinished nodes; completed ones keep their outputs)."""
    try:
        out = api.request_json(client_config(), "POST", f"/dispatches/{dispatch_id}/cancel",
                               body=b'{"task_ids": []}')
    except CovalentError as exc:
        _fail(exc)
    click.echo(out["message"])


COMMANDS = (list_dispatches, watch, cancel)
