"""``covalent list``, ``covalent watch ID``, ``covalent cancel ID`` and ``covalent status ID``:
dispatches from a terminal.

They talk to the running dispatcher through the SDK's REST client (address and token from the
config file, as ``ct.dispatch`` does). ``ID`` may be any unique start of a dispatch id, such as
the 8 characters ``covalent list`` and the web UI show (``GET /api/v1/resolve/{prefix}``).
``watch`` draws one progress bar per electron name (``covalent._progress``; plain lines when not
a terminal) and exits with the dispatch's outcome: 0 COMPLETED, 1 FAILED, 2 CANCELLED; Ctrl-C
stops watching, never the dispatch (130).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any, NoReturn
from urllib.parse import quote

import click

import covalent
from covalent import _progress, api
from covalent.config import ClientConfig, client_config
from covalent.errors import CovalentError, DispatcherUnavailableError, ServerNotYoursError
from covalent.wire.status import Status

EXIT_CODES = {Status.COMPLETED: 0, Status.FAILED: 1, Status.CANCELLED: 2}
EXIT_NOT_WATCHED = 4  # `covalent watch` of an unknown id, or with no dispatcher answering


def _reason(exc: CovalentError) -> str:
    """What a command that failed with ``exc`` says."""
    if isinstance(exc, DispatcherUnavailableError) and not isinstance(exc, ServerNotYoursError):
        return f"no dispatcher answers at {client_config().url} (`covalent start` starts one)"
    return str(exc)


def _fail(exc: CovalentError) -> NoReturn:
    raise click.ClickException(_reason(exc))


def resolve(cfg: ClientConfig, prefix: str) -> str:
    """The full id of the one dispatch whose id starts with ``prefix``.

    Raises:
        DispatchNotFoundError: none does. CovalentError: several do (the message names them).
    """
    prefix = prefix.strip().lower()
    if not prefix:
        raise CovalentError("no dispatch id given: give one, or its first characters "
                            "(`covalent list` shows them)")
    if len(prefix) == 36:
        return prefix
    found: str = api.request_json(cfg, "GET", f"/resolve/{quote(prefix, safe='')}")["dispatch_id"]
    return found


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


LIST_MAX = 1000  # rows `covalent list` prints at most


@click.command("list")
@click.option("-n", "--limit", type=click.IntRange(1, LIST_MAX), default=20, show_default=True,
              help="How many, newest first.")
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
        more = ("-n shows more" if limit < LIST_MAX else
                "--status or -q narrow them; the web UI pages through all")
        click.echo(f"({len(rows)} of {out['total']}; {more})")


@click.command()
@click.argument("dispatch_id")
def watch(dispatch_id: str) -> None:
    """Follow a dispatch: a progress bar per electron name until it ends.

    Exit code: 0 COMPLETED, 1 FAILED, 2 CANCELLED, 4 it could not be watched (unknown id, no
    dispatcher answering). Ctrl-C stops watching, not the dispatch.
    """
    try:
        cfg = client_config()
        dispatch_id = resolve(cfg, dispatch_id)
        status = _progress.watch(cfg, dispatch_id, sys.stdout)
    except KeyboardInterrupt:
        click.echo(f"\nStopped watching; dispatch {dispatch_id} goes on "
                   f"(`covalent cancel {dispatch_id}` stops it).", err=True)
        sys.exit(130)
    except CovalentError as exc:  # exit 4, not 1, which says FAILED
        click.echo(f"Error: {_reason(exc)}", err=True)
        sys.exit(EXIT_NOT_WATCHED)
    sys.exit(EXIT_CODES.get(status, 1))


@click.command()
@click.argument("dispatch_id")
def cancel(dispatch_id: str) -> None:
    """Cancel a running dispatch (its unfinished nodes; completed ones keep their outputs)."""
    try:
        message = covalent.cancel(resolve(client_config(), dispatch_id))
    except CovalentError as exc:
        _fail(exc)
    click.echo(message)  # an ended dispatch: "... already ended COMPLETED; nothing to cancel."


def show_dispatch(prefix: str) -> int:
    """``covalent status ID``: one dispatch's name, status, electrons, times and error; the exit
    code ``watch`` would give (3 while it has not ended)."""
    try:
        cfg = client_config()
        dispatch_id = resolve(cfg, prefix)
        body = api.request_json(cfg, "GET", f"/dispatches/{dispatch_id}/progress")
    except CovalentError as exc:
        _fail(exc)
    electrons = body["electrons"]
    done, total = sum(e["completed"] for e in electrons), sum(e["total"] for e in electrons)
    click.echo(f"{body['name']} {dispatch_id}: {body['status']}, {done}/{total} electrons")
    click.echo(f"started {body.get('start_time') or '-'}, ended {body.get('end_time') or '-'}")
    for e in electrons:
        detail = _progress._detail(e)
        click.echo(f"  {e['name']}: {e['completed']}/{e['total']} completed"
                   f"{', ' + detail if detail else ''} [{_progress._took(e)}]")
    if body.get("error"):
        click.echo(str(body["error"]).rstrip())
    return EXIT_CODES.get(Status(body["status"]), 3)


COMMANDS = (list_dispatches, watch, cancel)
