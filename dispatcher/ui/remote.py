"""Feed the live hub, on a replica, with what other replicas commit (issue #26).

A replica hears its own Recorder's commits only; of the others it hears a dispatch's end (a
NOTIFY that wakes ``get_result(wait=True)``) and cancels. So while somebody here watches a
dispatch that another replica runs (an event stream, a progress long-poll), one task reads
that dispatch's node rows and status from the store every ``POLL_S`` and hands the
differences to the hub as a commit: the version moves, long-polls wake, streams send their
updates and their ``end``. The task stops at the dispatch's final status, once this replica
runs the dispatch itself (its Recorder feeds the hub then), or ``LINGER_S`` after its last
watcher left (a CLI's long-polls follow each other: they keep one task and one baseline).
While a listing page is open, one more task reads the newest dispatches and the electron
counts of those running elsewhere, and tells the listing streams which ones moved.

Nothing here runs with SQLite: a single dispatcher has no other writer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ..recorder import Commit
from ..state import TERMINAL, DispatchUpdate, NodeUpdate, Status
from ..store import DispatchStore, NodeRow
from .live import LiveHub

log = logging.getLogger("covalent.dispatcher")

POLL_S = 1.0
LINGER_S = 5.0  # a dispatch nobody watches any more is still read this long
LISTED = 200  # the newest dispatches a listing page's task looks at

Nodes = dict[int, tuple[Status, str | None, str | None]]  # node id -> status, start, end
Head = tuple[Status, str | None, str | None]  # the dispatch's status, start and end times


def node_state(rows: list[NodeRow]) -> Nodes:
    return {r.node_id: (r.status, r.start_time, r.end_time) for r in rows}


def differences(dispatch_id: str, before: tuple[Head, Nodes], after: tuple[Head, Nodes]
                ) -> Commit | None:
    """What moved between two reads of a dispatch, as a commit (None: nothing did).

    >>> N, R, C = Status.NEW_OBJECT, Status.RUNNING, Status.COMPLETED
    >>> c = differences("d", ((N, None, None), {0: (N, None, None)}),
    ...                 ((C, "t0", "t1"), {0: (C, "t0", "t1")}))
    >>> [str(u.status) for u in c.dispatches], [str(u.status) for u in c.nodes], c.ended
    (['RUNNING', 'COMPLETED'], ['COMPLETED'], ['d'])
    """
    (head0, nodes0), (head1, nodes1) = before, after
    nodes = [NodeUpdate(dispatch_id, i, status=s, start_time=st, end_time=e)
             for i, (s, st, e) in nodes1.items() if nodes0.get(i) != (s, st, e)]
    dispatches = []
    if head1 != head0:
        if head0[0] == Status.NEW_OBJECT and head1[0] in TERMINAL - {Status.FAILED}:
            # started and ended between two reads: the state machine goes through RUNNING
            dispatches.append(DispatchUpdate(dispatch_id, status=Status.RUNNING))
        dispatches.append(DispatchUpdate(dispatch_id, status=head1[0], start_time=head1[1],
                                         end_time=head1[2]))
    if not nodes and not dispatches:
        return None
    return Commit(nodes, dispatches, [dispatch_id] if head1[0] in TERMINAL else [])


class RemoteFeed:
    """The tasks that read, for this replica's watchers, what other replicas commit."""

    def __init__(self, hub: LiveHub, store: DispatchStore, runs_here: Callable[[str], bool],
                 poll_s: float = POLL_S, linger_s: float = LINGER_S) -> None:
        self.hub, self.store, self.runs_here = hub, store, runs_here
        self.poll_s, self.linger_s = poll_s, linger_s
        self._tasks: dict[str | None, asyncio.Task[None]] = {}
        self._seen: dict[str, float] = {}  # dispatch id -> when a watcher last asked for it

    def follow(self, dispatch_id: str | None, rows: list[NodeRow] | None = None,
               status: Status | None = None) -> None:
        """Somebody here watches ``dispatch_id`` (None: the listing); ``rows`` and ``status``,
        if given, are what they were just shown (the first read compares with them)."""
        loop = asyncio.get_running_loop()
        if dispatch_id is not None:
            if self.runs_here(dispatch_id) or status in TERMINAL:
                return
            self._seen[dispatch_id] = loop.time()
        if dispatch_id in self._tasks or self.hub.closed:
            return
        base = None if rows is None or status is None else ((status, None, None), node_state(rows))
        coro = self._listing() if dispatch_id is None else self._dispatch(dispatch_id, base)
        task = asyncio.create_task(coro, name=f"covalent-remote-{dispatch_id or 'listing'}")
        self._tasks[dispatch_id] = task
        task.add_done_callback(lambda t: self._done(dispatch_id, t))

    def _done(self, dispatch_id: str | None, task: asyncio.Task[None]) -> None:
        if self._tasks.get(dispatch_id) is task:
            del self._tasks[dispatch_id]
        if dispatch_id is not None:
            self._seen.pop(dispatch_id, None)
        if not task.cancelled() and task.exception() is not None:
            log.warning("following %s on another replica stopped: %s",
                        dispatch_id or "the listing", task.exception())

    def _wanted(self, dispatch_id: str) -> bool:
        if self.hub.watching(dispatch_id):
            self._seen[dispatch_id] = asyncio.get_running_loop().time()
            return True
        return asyncio.get_running_loop().time() - self._seen.get(dispatch_id, 0.0) < self.linger_s

    async def _read(self, dispatch_id: str) -> tuple[Head, Nodes] | None:
        record = await self.store.get_dispatch(dispatch_id)
        if record is None:
            return None
        rows = await self.store.node_rows(dispatch_id)
        return (record.status, record.start_time, record.end_time), node_state(rows)

    async def _dispatch(self, dispatch_id: str, base: tuple[Head, Nodes] | None) -> None:
        try:
            if base is None:
                base = await self._read(dispatch_id)
            while base is not None and self._wanted(dispatch_id) and not self.hub.closed:
                await asyncio.sleep(self.poll_s)
                if self.runs_here(dispatch_id):  # taken over: the Recorder tells the hub now
                    return
                try:
                    now = await self._read(dispatch_id)
                except Exception as exc:  # noqa: BLE001 - the database is away: next time
                    log.warning("could not read dispatch %s for its watchers: %s", dispatch_id, exc)
                    continue
                if now is None:
                    return  # deleted
                if base[0][1:] == (None, None) and now[0][0] == base[0][0]:
                    base = (now[0], base[1])  # the times of a status shown without them
                commit = differences(dispatch_id, base, now)
                base = now
                if commit is not None:
                    self.hub.on_commit(commit)
                if now[0][0] in TERMINAL:
                    return
        finally:
            self.hub.forget(dispatch_id)

    async def _listing(self) -> None:
        before: dict[str, tuple[Status, dict[Status, int]]] | None = None
        while self.hub.watching(None) and not self.hub.closed:
            try:
                rows = await self.store.list_dispatches(None, LISTED)
                elsewhere = [r.dispatch_id for r in rows
                             if r.status not in TERMINAL and not self.runs_here(r.dispatch_id)]
                counts = await self.store.electron_counts(elsewhere) if elsewhere else {}
            except Exception as exc:  # noqa: BLE001 - the database is away: next time
                log.warning("could not read the dispatches for the listing: %s", exc)
            else:
                now = {r.dispatch_id: (r.status, counts.get(r.dispatch_id, {})) for r in rows}
                if before is not None:
                    moved = {d for d, state in now.items()
                             if before.get(d) != state and not self.runs_here(d)}
                    if moved:
                        self.hub.touch(moved)
                before = now
            await asyncio.sleep(self.poll_s)

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
