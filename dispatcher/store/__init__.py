"""The dispatcher's durable state: the ``DispatchStore`` protocol, its records, and two stores.

``open_store`` picks one from a database URL: none (the embedded default: SQLite in the data
dir), ``sqlite:///path/to/file.db``, or ``postgresql://user:password@host:port/db``. Both
share their SQL (``sqlstore``, ``listing``, ``deletion``) and schema (``schema``); each raises
the protocol's own errors (``dispatcher.errors``), never its driver's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .base import (BlobSource, DispatchExists, DispatchPage, DispatchQuery, DispatchRecord,
                   DispatchStore, DispatchSummary, NewDispatch, NodeRecord, NodeRow, StoredBlob,
                   TriggerRecord, blob_ref)
from .sqlite import SqliteStore
from .sqlstore import SqlStore

__all__ = ["BlobSource", "DispatchExists", "DispatchPage", "DispatchQuery", "DispatchRecord",
           "DispatchStore", "DispatchSummary", "NewDispatch", "NodeRecord", "NodeRow", "SqlStore",
           "SqliteStore", "StoredBlob", "TriggerRecord", "blob_ref", "open_store", "redact"]

POSTGRES_SCHEMES = ("postgresql", "postgres")


def open_store(db_url: str, db_path: Path, blob_dir: Path,
               storage_options: dict[str, Any] | None = None,
               store_root: str | None = None) -> SqlStore:
    """The store a database URL names (not opened yet); ValueError for one it cannot use.

    >>> open_store("", Path("/d/dispatches.db"), Path("/d/blobs")).describe()
    'SQLite /d/dispatches.db'
    >>> open_store("mysql://h/db", Path("/d/x.db"), Path("/d/blobs"))
    Traceback (most recent call last):
    ...
    ValueError: the database URL takes postgresql://user@host:port/database or sqlite:///path/to/file.db, got 'mysql://h/db'
    """
    check_url(db_url)
    if not db_url:
        return SqliteStore(db_path, blob_dir, storage_options, store_root)
    if db_url.startswith("sqlite://"):
        return SqliteStore(Path(db_url.removeprefix("sqlite://")), blob_dir, storage_options,
                           store_root)
    from .postgres import PostgresStore  # psycopg is imported only by those who use it

    return PostgresStore(db_url, blob_dir, storage_options, store_root)


def check_url(db_url: str) -> None:
    """ValueError unless ``db_url`` is empty or names a database this version can use."""
    if not db_url:
        return
    scheme = db_url.partition("://")[0].lower()
    if scheme in POSTGRES_SCHEMES and urlsplit(db_url).path.strip("/"):
        from .postgres import split_url

        split_url(db_url)  # our own parameters must be numbers
        return
    if scheme == "sqlite" and db_url.removeprefix("sqlite://").strip("/"):
        return
    raise ValueError("the database URL takes postgresql://user@host:port/database or "
                     f"sqlite:///path/to/file.db, got {redact(db_url)!r}")


def redact(db_url: str) -> str:
    """The URL without its password, for logs and status.

    >>> redact("postgresql://me:secret@db.example:5432/covalent")
    'postgresql://me:***@db.example:5432/covalent'
    >>> redact("postgresql://db.example/covalent?password=secret")
    'postgresql://db.example/covalent?password=***'
    """
    parts = urlsplit(db_url)
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}:***@{host}"
    query = "&".join(f"{k}=***" if k.lower() == "password" else f"{k}={v}"
                     for k, _, v in (p.partition("=") for p in parts.query.split("&") if p))
    return urlunsplit(parts._replace(netloc=netloc, query=query))
