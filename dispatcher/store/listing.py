"""What the web UI, the progress views and the metrics read (issue #15), in both databases.

Sort keys are fixed SQL expressions chosen by name (``Dialect.sorts``), never user text; a
search is a ``LIKE`` with its wildcards escaped, case-insensitive in both databases.
"""

from __future__ import annotations

from typing import Any

from ..state import Status
from .base import USER_KINDS, DispatchPage, DispatchQuery, DispatchSummary, NodeRecord, NodeRow
from .sql import NODE_COLUMNS, Db, Dialect, SqlBase, chunks, marks

_KINDS = ",".join(f"'{k}'" for k in USER_KINDS)  # fixed identifiers, never user text


class Listing(SqlBase):
    """Reads for people: pages of dispatches, electron counts, node tables, one node."""

    async def page_dispatches(self, query: DispatchQuery) -> DispatchPage:
        """One page of the listing; the rows, the total and the per-status counts come from
        one read transaction, so they agree."""
        return await self._snapshot(self._page_dispatches, query)

    def _page_dispatches(self, db: Db, query: DispatchQuery) -> DispatchPage:
        where, args = listing_filter(query, self.dialect)
        sorts = self.dialect.sorts
        order = sorts.get(query.sort, sorts["created"]) + (" DESC" if query.descending else " ASC")
        counts = {s: int(n) for s, n in db.execute(
            f"SELECT status, count(*) FROM dispatches{where} GROUP BY status", args)}
        status_where, status_args = where, list(args)
        if query.status:
            status_where += (" AND" if where else " WHERE") + " status = ?"
            status_args.append(query.status)
        total = counts.get(query.status, 0) if query.status else sum(counts.values())
        rows = db.execute(
            "SELECT dispatch_id, root_dispatch_id, name, status, created_at, start_time, end_time,"
            f" owner FROM dispatches{status_where} ORDER BY {order}, created_at DESC, dispatch_id"
            " LIMIT ? OFFSET ?", [*status_args, max(query.limit, 0), max(query.offset, 0)])
        page = [DispatchSummary(d, r, n, Status(st), c, s, e, o)
                for d, r, n, st, c, s, e, o in rows]
        return DispatchPage(page, total, counts)

    async def electron_counts(self, dispatch_ids: list[str]) -> dict[str, dict[Status, int]]:
        """Per dispatch, how many user electrons (``USER_KINDS``) have each status."""
        return await self._read(self._electron_counts, dispatch_ids)

    def _electron_counts(self, db: Db, dispatch_ids: list[str]) -> dict[str, dict[Status, int]]:
        out: dict[str, dict[Status, int]] = {i: {} for i in dispatch_ids}
        for chunk in chunks(dispatch_ids):
            for did, status, n in db.execute(
                    f"SELECT dispatch_id, status, count(*) FROM nodes WHERE dispatch_id IN"
                    f" ({marks(len(chunk))}) AND kind IN ({_KINDS}) GROUP BY dispatch_id, status",
                    chunk):
                out[did][Status(status)] = int(n)
        return out

    async def find_ids(self, prefix: str, limit: int, owner: str | None = None) -> list[str]:
        """Ids of dispatches (sublattice ones too) that start with ``prefix``, newest first
        (of ``owner`` only, if given)."""
        return await self._read(self._find_ids, prefix, limit, owner)

    def _find_ids(self, db: Db, prefix: str, limit: int, owner: str | None) -> list[str]:
        # A range on the primary key (an index seek), not LIKE: ids are lower-case hex and "-",
        # all below "~" in bytewise order (the dialect's ``bytewise`` collation: PostgreSQL's
        # locale collations order "~" among letters).
        c = self.dialect.bytewise
        mine = " AND owner = ?" if owner is not None else ""
        args = [prefix, prefix + "~", *([owner] if owner is not None else []), limit]
        return [r[0] for r in db.execute(
            f"SELECT dispatch_id FROM dispatches WHERE dispatch_id{c} >= ? AND dispatch_id{c} < ?"
            f"{mine} ORDER BY created_at DESC LIMIT ?", args).fetchall()]

    async def node_rows(self, dispatch_id: str) -> list[NodeRow]:
        return await self._read(self._node_rows, dispatch_id)

    def _node_rows(self, db: Db, dispatch_id: str) -> list[NodeRow]:
        cur = db.execute(
            "SELECT node_id, name, kind, status, start_time, end_time, sub_dispatch_id,"
            " error IS NOT NULL, output_size, worker FROM nodes WHERE dispatch_id = ?"
            " ORDER BY node_id", (dispatch_id,)).fetchall()
        return [NodeRow(n, name, kind, Status(status), start, end, sub, bool(err), size, worker)
                for n, name, kind, status, start, end, sub, err, size, worker in cur]

    async def node_names(self, dispatch_id: str) -> list[tuple[str, str]]:
        """(name, kind) of each node, by node id (the metrics label nodes by name)."""
        return await self._read(self._node_names, dispatch_id)

    def _node_names(self, db: Db, dispatch_id: str) -> list[tuple[str, str]]:
        return [(name, kind) for name, kind in db.execute(
            "SELECT name, kind FROM nodes WHERE dispatch_id = ? ORDER BY node_id",
            (dispatch_id,)).fetchall()]

    async def get_node(self, dispatch_id: str, node_id: int) -> NodeRecord | None:
        return await self._read(self._get_node, dispatch_id, node_id)

    def _get_node(self, db: Db, dispatch_id: str, node_id: int) -> NodeRecord | None:
        row = db.execute(f"SELECT {NODE_COLUMNS} FROM nodes WHERE dispatch_id = ? AND"
                         " node_id = ?", (dispatch_id, node_id)).fetchone()
        if row is None:
            return None
        n, name, kind, status, *rest = row
        return NodeRecord(n, name, kind, Status(status), *rest)


def listing_filter(query: DispatchQuery, dialect: Dialect) -> tuple[str, list[Any]]:
    """The WHERE clause (top level; search in names and ids) shared by the rows and counts.

    >>> from dispatcher.store.sqlite import SQLITE
    >>> listing_filter(DispatchQuery(search="a_b"), SQLITE)[1]
    ['%a\\\\_b%', '%a\\\\_b%']
    """
    clauses: list[str] = []
    args: list[Any] = []
    if query.top_level:
        clauses.append("parent_dispatch_id IS NULL")
    if query.owner is not None:
        clauses.append("owner = ?")
        args.append(query.owner)
    text = query.search.strip()
    if text:
        escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        like = dialect.like
        clauses.append(f"(name {like} ? ESCAPE '\\' OR dispatch_id {like} ? ESCAPE '\\')")
        args += [f"%{escaped}%", f"%{escaped.lower()}%"]
    if query.created_after:
        clauses.append("created_at > ?")
        args.append(query.created_after)
    if query.created_before:
        clauses.append("created_at < ?")
        args.append(query.created_before)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args
