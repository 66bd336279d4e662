"""Leases on PostgreSQL: which replica acts on each running dispatch and active trigger.

A lease row is ``(resource, owner, epoch, expires_at)``; ``resource`` is ``dispatch:<id>`` or
``trigger:<id>``. Every time is the database's own clock (``now()``): replicas never compare
their clocks with each other's. A lease is taken when it is missing or expired, and each
taking adds one to its ``epoch`` (never reset while the row exists), so an epoch names one
tenure. Only a lease not yet expired can be renewed: one that expired is taken again, with a
new epoch, or not at all.

Fencing: a write for a leased resource carries ``FENCE`` with (resource, owner, epoch) and
applies only while that replica still holds that very tenure, unexpired; a replica that was
paused past its lease and wakes up writes nothing (its statements match no row).

A transaction of several fenced statements lands whole or not at all: each statement sees the
lease row as it stands when the statement starts (READ COMMITTED), so a takeover committed
between two of them would let the first apply and not the rest (it once left a cancel on
94,089 of 100,000 nodes and the rest NEW_OBJECT). Before such a transaction commits, ``hold``
locks its lease rows (``FOR SHARE``) and says which tenures still hold; the caller rolls the
transaction back if one does not. A takeover (``acquire``) waits for that commit, a round
trip, and gives up after ``LOCK_WAIT_MS`` if the holder was paused between the two (it tries
again at its next round; the paused holder's transaction ends after ``HOLD_IDLE_MS``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from ..state import PENDING, TERMINAL, sql_list
from .sql import Db

FENCE = ("EXISTS (SELECT 1 FROM leases WHERE leases.resource = ? AND leases.owner = ?"
         " AND leases.epoch = ? AND leases.expires_at > now())")
_LIVE = sql_list(TERMINAL | {PENDING})
LOCK_WAIT_MS = 1000  # how long a takeover waits for a lease row a fenced commit holds
HOLD_IDLE_MS = 10_000  # how long a transaction holding lease rows may sit idle (paused)


def dispatch_resource(dispatch_id: str) -> str:
    return f"dispatch:{dispatch_id}"


def trigger_resource(trigger_id: str) -> str:
    return f"trigger:{trigger_id}"


def acquire(db: Db, resource: str, owner: str, ttl_s: float) -> int | None:
    """Take ``resource`` if nobody holds it (or its lease expired): the new epoch, else None."""
    db.execute(f"SET LOCAL lock_timeout = {LOCK_WAIT_MS:d}")  # LockNotAvailable: next round
    row = db.execute(
        "INSERT INTO leases(resource, owner, epoch, expires_at)"
        " VALUES (?, ?, 1, now() + make_interval(secs => ?))"
        " ON CONFLICT (resource) DO UPDATE SET owner = EXCLUDED.owner,"
        " epoch = leases.epoch + 1, expires_at = EXCLUDED.expires_at"
        " WHERE leases.expires_at <= now() RETURNING epoch",
        (resource, owner, ttl_s)).fetchone()
    return None if row is None else int(row[0])


def renew(db: Db, owner: str, held: Sequence[tuple[str, int]], ttl_s: float) -> dict[str, int]:
    """Extend the leases ``owner`` still holds, unexpired, at these epochs; those renewed."""
    if not held:
        return {}
    # Rows locked in resource order, as ``hold`` locks them: the two never deadlock.
    rows = db.execute(
        "UPDATE leases SET expires_at = now() + make_interval(secs => ?)"
        " FROM (SELECT l.resource FROM leases l JOIN jsonb_to_recordset(?::jsonb)"
        " AS h(resource TEXT, epoch BIGINT) ON l.resource = h.resource AND l.epoch = h.epoch"
        " WHERE l.owner = ? AND l.expires_at > now() ORDER BY l.resource"
        " FOR NO KEY UPDATE OF l) AS mine"
        " WHERE leases.resource = mine.resource RETURNING leases.resource, leases.epoch",
        (ttl_s, json.dumps([{"resource": r, "epoch": e} for r, e in held]), owner)).fetchall()
    return {r: int(e) for r, e in rows}


def hold(db: Db, tenures: Mapping[str, tuple[str, int]]) -> set[str]:
    """Last in a transaction of fenced writes: lock the lease rows of these tenures (resource
    -> (owner, epoch)) that still hold, unexpired, until the commit; those resources."""
    if not tenures:
        return set()
    db.execute(f"SET LOCAL idle_in_transaction_session_timeout = {HOLD_IDLE_MS:d}")
    rows = db.execute(
        "SELECT l.resource FROM leases l JOIN jsonb_to_recordset(?::jsonb)"
        " AS h(resource TEXT, owner TEXT, epoch BIGINT) ON l.resource = h.resource"
        " AND l.owner = h.owner AND l.epoch = h.epoch WHERE l.expires_at > now()"
        " ORDER BY l.resource FOR SHARE OF l",
        (json.dumps([{"resource": r, "owner": o, "epoch": e}
                     for r, (o, e) in tenures.items()]),)).fetchall()
    return {r[0] for r in rows}


def release(db: Db, resource: str, owner: str, epoch: int) -> bool:
    """Give a lease up at once (it stays, expired, so its epoch keeps counting)."""
    return db.execute(
        "UPDATE leases SET expires_at = '-infinity' WHERE resource = ? AND owner = ?"
        " AND epoch = ?", (resource, owner, epoch)).rowcount == 1


def forsake(db: Db, owner: str) -> int:
    """Expire at once every live lease of ``owner``, a replica known to have exited (their
    epochs keep counting, and its writes still on the way are refused by the fence); how many."""
    return int(db.execute("UPDATE leases SET expires_at = '-infinity' WHERE owner = ?"
                          " AND expires_at > now()", (owner,)).rowcount)


def unowned(db: Db, limit: int = 200) -> list[str]:
    """Running dispatches and active triggers nobody holds a live lease on, oldest first."""
    rows = db.execute(
        "SELECT r FROM (SELECT 'dispatch:' || d.dispatch_id AS r, d.created_at AS c"
        " FROM dispatches d LEFT JOIN leases l ON l.resource = 'dispatch:' || d.dispatch_id"
        f" WHERE d.status NOT IN {_LIVE} AND (l.resource IS NULL OR l.expires_at <= now())"
        " UNION ALL SELECT 'trigger:' || t.trigger_id, t.created_at FROM triggers t"
        " LEFT JOIN leases l ON l.resource = 'trigger:' || t.trigger_id"
        " WHERE t.active = 1 AND (l.resource IS NULL OR l.expires_at <= now())) AS u"
        " ORDER BY c LIMIT ?", (limit,)).fetchall()
    return [r[0] for r in rows]


def holder(db: Db, resource: str) -> tuple[str, int, bool] | None:
    """(owner, epoch, live) of a lease, for tests and status."""
    row = db.execute("SELECT owner, epoch, expires_at > now() FROM leases WHERE resource = ?",
                     (resource,)).fetchone()
    return None if row is None else (row[0], int(row[1]), bool(row[2]))


def fenced(sql: str, args: Sequence[Any], resource: str, owner: str, epoch: int
           ) -> tuple[str, list[Any]]:
    """A statement whose WHERE clause ends it, and its arguments, made to apply only under
    this tenure of ``resource``."""
    return f"{sql} AND {FENCE}", [*args, resource, owner, epoch]
