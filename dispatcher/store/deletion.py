"""Delete finished dispatches in bounded transactions that let every other writer in (issue #21).

A delete first takes the dispatches away (their rows and triggers, one short transaction: from
then on the API says 404) and queues them in ``deletions``; then their nodes and the blobs only
they used go in batches of ``delete_batch`` rows, each its own transaction, so a 100,000-node
dispatch never holds the store for longer than one batch. Whether a blob is still used is two
index lookups (``blob_uses``, ``nodes.output_ref``). A delete the server did not finish (it
stopped, the request went away) is finished by ``resume_deletions`` at the next start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from ..protocol import now_iso
from ..state import PENDING, TERMINAL, sql_list
from .sql import Db, SqlBase, chunks, marks

log = logging.getLogger("covalent.dispatcher")

_TERMINAL = sql_list(TERMINAL)
_TERMINAL_OR_PENDING = sql_list([*TERMINAL, PENDING])


class Deletion(SqlBase):
    """``delete_dispatches`` and ``resume_deletions``."""

    delete_batch = 500  # node rows (or blob uses) per transaction

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deleting: set[asyncio.Task[None]] = set()

    async def delete_dispatches(self, dispatch_ids: list[str], pending: bool = False) -> list[str]:
        """Delete finished dispatches, their sublattice dispatches, triggers and the blobs no
        other dispatch uses; return the ids deleted. Unfinished ones are left alone, and
        never-started (NEW_OBJECT) ones unless ``pending`` (checked in the transaction that
        takes them away). The work goes on if the caller goes away (it is the store's,
        finished at close or next start)."""
        doomed = await self._timed_write("delete", self._doom, dispatch_ids, now_iso(), pending)
        if doomed:
            await asyncio.shield(self._background(self._finish(doomed)))
        return doomed

    async def resume_deletions(self) -> int:
        """Finish the deletes a previous run left unfinished; how many dispatches."""
        queued = await self._read(_queued)
        if queued:
            log.info("finishing the deletion of %d dispatches", len(queued))
            await asyncio.shield(self._background(self._finish(queued)))
        return len(queued)

    def _background(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(work)
        self._deleting.add(task)
        task.add_done_callback(self._deleting.discard)
        return task

    async def _stop_deleting(self) -> None:
        """At close: stop between batches (``deletions`` keeps what is left for next time)."""
        for task in list(self._deleting):
            task.cancel()
        await asyncio.gather(*self._deleting, return_exceptions=True)

    async def _finish(self, dispatch_ids: list[str]) -> None:
        for dispatch_id in dispatch_ids:
            while not await self._timed_write("delete", self._delete_batch, dispatch_id,
                                              self.delete_batch):
                pass

    def _doom(self, db: Db, dispatch_ids: list[str], stamp: str, pending: bool) -> list[str]:
        """Take finished (or ``pending``: never-started) dispatches and, below them, their
        sublattice dispatches away and queue their remains; the ids taken."""
        deletable = _TERMINAL_OR_PENDING if pending else _TERMINAL
        doomed: list[str] = []
        todo = list(dispatch_ids)
        while todo:
            chunk, todo = todo[:500], todo[500:]
            found = [r[0] for r in db.execute(
                f"SELECT dispatch_id FROM dispatches WHERE dispatch_id IN ({marks(len(chunk))})"
                f" AND status IN {deletable}", chunk)]
            doomed += found
            if found:
                todo += [r[0] for r in db.execute(
                    "SELECT dispatch_id FROM dispatches WHERE parent_dispatch_id IN"
                    f" ({marks(len(found))})", found)]
        for part in chunks(doomed):
            for table in ("dispatches", "dispatch_graphs", "triggers"):
                db.execute(f"DELETE FROM {table} WHERE dispatch_id IN ({marks(len(part))})", part)
        db.executemany("INSERT INTO deletions(dispatch_id, queued_at) VALUES (?,?)"
                       " ON CONFLICT DO NOTHING", [(d, stamp) for d in doomed])
        return doomed

    def _delete_batch(self, db: Db, dispatch_id: str, size: int) -> bool:
        """Delete up to ``size`` of a dispatch's remains (nodes first, then its blob uses) and
        the blobs they leave unused; True once nothing is left."""
        rows = db.execute("SELECT node_id, output_ref FROM nodes WHERE dispatch_id = ?"
                          " ORDER BY node_id LIMIT ?", (dispatch_id, size)).fetchall()
        if rows:
            db.execute("DELETE FROM nodes WHERE dispatch_id = ? AND node_id <= ?",
                       (dispatch_id, rows[-1][0]))
            self._collect(db, [ref for _, ref in rows if ref])
            return False
        refs = [r[0] for r in db.execute("SELECT ref FROM blob_uses WHERE dispatch_id = ?"
                                         " LIMIT ?", (dispatch_id, size))]
        if refs:
            for part in chunks(refs):
                db.execute(f"DELETE FROM blob_uses WHERE dispatch_id = ? AND ref IN"
                           f" ({marks(len(part))})", [dispatch_id, *part])
            self._collect(db, refs)
            return False
        db.execute("DELETE FROM deletions WHERE dispatch_id = ?", (dispatch_id,))
        return True


def _queued(db: Db) -> list[str]:
    return [r[0] for r in db.execute("SELECT dispatch_id FROM deletions ORDER BY queued_at")]
