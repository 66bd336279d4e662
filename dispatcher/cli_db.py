"""``covalent db upgrade [--dry-run]``: bring a data dir's or database's schema up to date;
``covalent db compact``: give the disk back what deleted dispatches held in the SQLite file.

The server applies missing migrations itself when it starts; this command says what they are
(``--dry-run`` reads the schema version and changes nothing) or applies them with the server
stopped. A database written by a newer version is refused, and left as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import sys
from pathlib import Path

import click

from covalent.config import read_config

from .errors import StoreError
from .instance import holder
from .settings import default_data_dir
from .store import SqliteStore, open_store, schema


def database_url(db_url: str | None) -> str:
    """``--db-url``, else ``COVALENT_DB_URL``, else the config's ``[database] url``, else ""
    (the data dir's SQLite file): the order the server reads them in."""
    if db_url:
        return db_url
    if os.environ.get("COVALENT_DB_URL"):
        return os.environ["COVALENT_DB_URL"]
    url = (read_config().get("database") or {}).get("url")
    return url if isinstance(url, str) else ""


@click.group()
def db() -> None:
    """The dispatcher's database: its schema version and upgrades, compacting it."""


@db.command()
@click.option("--dry-run", is_flag=True, help="Say what would change; change nothing.")
@click.option("--data-dir", default=None, envvar="COVALENT_DATA_DIR",
              help="The data dir (its SQLite file and blobs).")
@click.option("--db-url", default=None,
              help="postgresql://... or sqlite:///path (default: COVALENT_DB_URL, the config's "
                   "[database] url, else the data dir's SQLite file).")
def upgrade(dry_run: bool, data_dir: str | None, db_url: str | None) -> None:
    """Apply the schema migrations the database lacks (the server does it at start too)."""
    ddir = Path(data_dir) if data_dir else default_data_dir()
    url = database_url(db_url)
    try:
        store = open_store(url, ddir / "dispatches.db", ddir / "blobs")
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        version, todo = asyncio.run(store.upgrade_plan())
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    shown = "none yet (empty, or written before schema versions)" if version == 0 else str(version)
    click.echo(f"Database: {store.describe()}")
    click.echo(f"Schema version: {shown}; this version of covalent-dask: {schema.LATEST}")
    if not todo:
        click.echo("Up to date: nothing to do.")
        return
    click.echo("Would apply:" if dry_run else "Applying:")
    for m in todo:
        click.echo(f"  {m.version}  {m.summary}")
    if dry_run:
        click.echo("Dry run: nothing was changed.")
        return
    if not url and holder(ddir) is not None:
        raise click.ClickException(f"a dispatcher is running on {ddir}: it applied what it "
                                   "needs when it started (`covalent stop` first to run this)")

    async def apply() -> None:
        await store.open()  # opening applies them, each in a transaction of its own
        await store.close()

    try:
        asyncio.run(apply())
    except StoreError as exc:
        click.echo(f"Upgrade failed, the migrations before the failing one are kept: {exc}",
                   err=True)
        sys.exit(1)
    click.echo(f"Done: schema version {schema.LATEST}.")


@db.command()
@click.option("--data-dir", default=None, envvar="COVALENT_DATA_DIR",
              help="The data dir (its SQLite file and blobs).")
@click.option("--db-url", default=None, help="As for `covalent db upgrade`.")
@click.pass_context
def migrate(ctx: click.Context, data_dir: str | None, db_url: str | None) -> None:
    """Covalent's name for `covalent db upgrade`: apply the migrations the database lacks."""
    ctx.invoke(upgrade, dry_run=False, data_dir=data_dir, db_url=db_url)


@db.command()
@click.option("--data-dir", default=None, envvar="COVALENT_DATA_DIR",
              help="The data dir (its SQLite file).")
def compact(data_dir: str | None) -> None:
    """Give the disk back the space deleted dispatches held in the SQLite file (a purge frees
    its pages for new dispatches, but the file keeps its size). Rewrites the file; a running
    dispatcher waits meanwhile (its writes are retried)."""
    ddir = Path(data_dir) if data_dir else default_data_dir()
    try:
        store = open_store(database_url(None), ddir / "dispatches.db", ddir / "blobs")
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if not isinstance(store, SqliteStore):
        raise click.ClickException("the database is PostgreSQL: its autovacuum reuses the space; "
                                   "VACUUM FULL (which locks each table) gives it back")
    path = store.db_path
    if not path.exists():
        raise click.ClickException(f"no database at {path}")
    before = _size(path)
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=60, isolation_level=None)) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.execute("VACUUM")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.Error as exc:
        raise click.ClickException(f"cannot compact {path}: {exc}") from None
    after = _size(path)
    click.echo(f"Compacted {path}: {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB")


def _size(path: Path) -> int:
    """The database file and its write-ahead log, in bytes."""
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())
