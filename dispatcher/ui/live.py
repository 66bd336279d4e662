"""Push what each commit changed to whoever watches a dispatch: browsers (server-sent events)
and progress views (a long-poll on a per-dispatch version).

Model: one ``LiveHub`` per server subscribes to ``Recorder.subscribe``, which calls it on the
event loop after every commit with the updates that commit made durable, so nothing is shown
before it is on disk, and nothing is discovered by a timer (issue #15); on a replica, what the
others commit to a dispatch watched here is read for its watchers (``remote``, issue #26),
and ``follow`` says what is watched. The hub only files updates under their dispatch and
wakes the watchers; each watcher's own task turns them into an event, at the pace it can
write (updates that arrive meanwhile are merged, never queued without bound).

What a browser is told is what the store holds: a stream starts with a snapshot read *after*
the watch is registered (so no commit falls between the two), and updates pass through the
state machine (``state.may_enter``), as the store's guards do, so a late report never turns a
CANCELLED node back to COMPLETED on screen.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web

from ..recorder import Commit
from ..state import DISPATCH_TRANSITIONS, NODE_TRANSITIONS, DispatchUpdate, NodeUpdate, Status, may_enter
from ..store import DispatchQuery, DispatchStore, NodeRow
from ..store.base import USER_KINDS
from ..users import RECHECK_S, still_live

# One letter per status in the browser's arrays (10,000 statuses are 10 kB).
CODES = {Status.NEW_OBJECT: "N", Status.RUNNING: "R", Status.COMPLETED: "C", Status.FAILED: "F",
         Status.CANCELLED: "X"}


def code(status: Status) -> str:
    """The letter of a status.

    >>> code(Status.COMPLETED), code(Status.POSTPROCESSING)
    ('C', '?')
    """
    return CODES.get(status, "?")


class Watch:
    """One watcher of one dispatch (or, with ``dispatch_id`` None, of every dispatch)."""

    def __init__(self, dispatch_id: str | None) -> None:
        self.dispatch_id = dispatch_id
        self.wake = asyncio.Event()
        self.closed = False
        self.nodes: list[NodeUpdate] = []
        self.dispatches: list[DispatchUpdate] = []
        self.touched: set[str] = set()

    def take(self) -> tuple[list[NodeUpdate], list[DispatchUpdate], set[str]]:
        """What arrived since the last call (and clear the wake-up)."""
        self.wake.clear()
        out = self.nodes, self.dispatches, self.touched
        self.nodes, self.dispatches, self.touched = [], [], set()
        return out


Follower = Callable[[str | None, list[NodeRow] | None, Status | None], None]


class LiveHub:
    """Files each commit's updates under their dispatch and wakes its watchers."""

    def __init__(self) -> None:
        self._watches: dict[str | None, set[Watch]] = defaultdict(set)
        self._versions: dict[str, int] = {}
        self._changed: dict[str, asyncio.Event] = {}
        self._waiting: dict[str, int] = defaultdict(int)  # long-polls per dispatch
        self.closed = False
        # On a replica: told what is watched here, it reads what other replicas commit (remote.py)
        self.follower: Follower | None = None

    def follow(self, dispatch_id: str | None, rows: list[NodeRow] | None = None,
               status: Status | None = None) -> None:
        """Somebody watches ``dispatch_id`` (None: the listing) and was just shown ``rows``
        and ``status`` if given: on a replica, what other replicas commit is read for them."""
        if self.follower is not None:
            self.follower(dispatch_id, rows, status)

    def watching(self, dispatch_id: str | None) -> bool:
        """Whether a stream (or, for a dispatch, a long-poll) watches it now."""
        return bool(self._watches.get(dispatch_id)) or (
            dispatch_id is not None and self._waiting.get(dispatch_id, 0) > 0)

    def forget(self, dispatch_id: str) -> None:
        """Nobody here follows the dispatch any more: drop its version."""
        if dispatch_id not in self._watches and not self._waiting.get(dispatch_id):
            self._versions.pop(dispatch_id, None)

    def touch(self, dispatch_ids: Iterable[str]) -> None:
        """Wake the listing streams: these dispatches changed."""
        for w in self._watches.get(None, ()):
            w.touched |= set(dispatch_ids)
            w.wake.set()

    def on_commit(self, commit: Commit) -> None:
        """The Recorder's subscriber: called on the loop after each commit."""
        nodes: dict[str, list[NodeUpdate]] = defaultdict(list)
        dispatches: dict[str, list[DispatchUpdate]] = defaultdict(list)
        for u in commit.nodes:
            nodes[u.dispatch_id].append(u)
        for d in commit.dispatches:
            dispatches[d.dispatch_id].append(d)
        touched = set(nodes) | set(dispatches)
        for dispatch_id in touched:
            self._versions[dispatch_id] = self._versions.get(dispatch_id, 0) + 1
            ev = self._changed.pop(dispatch_id, None)
            if ev is not None:
                ev.set()
            for w in self._watches.get(dispatch_id, ()):
                w.nodes += nodes.get(dispatch_id, [])
                w.dispatches += dispatches.get(dispatch_id, [])
                w.touched.add(dispatch_id)
                w.wake.set()
        self.touch(touched)
        for dispatch_id in commit.ended:  # a finished dispatch's version is not waited on
            self._versions.pop(dispatch_id, None)

    @contextmanager
    def watch(self, dispatch_id: str | None) -> Iterator[Watch]:
        w = Watch(dispatch_id)
        w.closed = self.closed
        self._watches[dispatch_id].add(w)
        try:
            yield w
        finally:
            self._watches[dispatch_id].discard(w)
            if not self._watches[dispatch_id]:
                del self._watches[dispatch_id]

    @property
    def watchers(self) -> int:
        """How many event streams are open now."""
        return sum(len(w) for w in self._watches.values())

    def version(self, dispatch_id: str) -> int:
        """How many commits touched the dispatch since this server started (0 after it ended)."""
        return self._versions.get(dispatch_id, 0)

    async def changed_since(self, dispatch_id: str, since: int, timeout: float) -> None:
        """Return once a commit touches the dispatch after version ``since``, or ``timeout``."""
        if self.closed or self.version(dispatch_id) != since:
            return
        ev = self._changed.setdefault(dispatch_id, asyncio.Event())
        self._waiting[dispatch_id] += 1
        try:
            self.follow(dispatch_id)
            await asyncio.wait_for(ev.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            self._waiting[dispatch_id] -= 1
            if not self._waiting[dispatch_id]:
                del self._waiting[dispatch_id]

    def close(self) -> None:
        """The server is stopping: every watcher and long-poll returns."""
        self.closed = True
        for watches in self._watches.values():
            for w in watches:
                w.closed = True
                w.wake.set()
        for ev in self._changed.values():
            ev.set()


class NodeMirror:
    """The statuses a browser shows for one dispatch, moved only where the state machine
    allows, so a stream of updates never contradicts the store."""

    def __init__(self, rows: list[NodeRow]) -> None:
        self.status = {r.node_id: r.status for r in rows}

    def apply(self, updates: list[NodeUpdate]) -> list[tuple[int, str]]:
        """The ``(node id, code)`` changes ``updates`` make, in order, each node once."""
        changed: dict[int, str] = {}
        for u in updates:
            current = self.status.get(u.node_id)
            if u.status is None or current is None or u.status == current:
                continue
            if may_enter(current, u.status, NODE_TRANSITIONS):
                self.status[u.node_id] = u.status
                changed[u.node_id] = code(u.status)
        return list(changed.items())


def dispatch_moved(current: Status, updates: list[DispatchUpdate]) -> Status:
    """The dispatch status after ``updates``, by the state machine.

    >>> dispatch_moved(Status.CANCELLED, [DispatchUpdate("d", status=Status.COMPLETED)])
    <Status.CANCELLED: 'CANCELLED'>
    """
    for d in updates:
        if d.status is not None and d.status != current and may_enter(current, d.status,
                                                                        DISPATCH_TRANSITIONS):
            current = d.status
    return current


async def send(resp: web.StreamResponse, event: str, data: object) -> None:
    """One server-sent event (JSON data on one line)."""
    payload = json.dumps(data, separators=(",", ":"))
    await resp.write(f"event: {event}\ndata: {payload}\n\n".encode())


async def open_stream(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                       "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    return resp


async def stream_dispatch(request: web.Request, hub: LiveHub, store: DispatchStore,
                          dispatch_id: str) -> web.StreamResponse:
    """Events ``snapshot`` (every node's status, and which nodes are user electrons), then
    ``update`` per batch of commits; the stream ends after the one that holds the dispatch's
    final status, or quietly when the browser has gone (a closed tab is no error)."""
    return await _events(request, lambda resp: _follow_dispatch(resp, hub, store, dispatch_id))


async def _events(request: web.Request,
                  follow: Callable[[web.StreamResponse], Awaitable[None]]) -> web.StreamResponse:
    """An event stream written by ``follow``; a browser that went away ends it quietly, and so
    does a user revoked meanwhile (asked every ``RECHECK_S``: nothing more is sent to them)."""
    resp = await open_stream(request)
    follower = asyncio.ensure_future(follow(resp))
    try:
        while not (await asyncio.wait([follower], timeout=RECHECK_S))[0]:
            if not await still_live(request):
                follower.cancel()
                break
        [ended] = await asyncio.gather(follower, return_exceptions=True)
    finally:
        follower.cancel()  # this handler cancelled (the server stops): the follower with it
    if isinstance(ended, BaseException) and not isinstance(
            ended, ConnectionResetError | asyncio.CancelledError):  # closed tab, revoked user
        raise ended
    return resp


async def _follow_dispatch(resp: web.StreamResponse, hub: LiveHub, store: DispatchStore,
                           dispatch_id: str) -> None:
    with hub.watch(dispatch_id) as w:
        rows = await store.node_rows(dispatch_id)
        status = await store.get_status(dispatch_id) or Status.NEW_OBJECT
        mirror = NodeMirror(rows)
        hub.follow(dispatch_id, rows, status)
        await send(resp, "snapshot", {
            "status": str(status), "nodes": "".join(code(r.status) for r in rows),
            "user": "".join("1" if r.kind in USER_KINDS else "0" for r in rows)})
        while status not in (Status.COMPLETED, Status.FAILED, Status.CANCELLED) and not w.closed:
            await w.wake.wait()
            nodes, dispatches, _ = w.take()
            changes = mirror.apply(nodes)
            moved = dispatch_moved(status, dispatches)
            if moved == Status.NEW_OBJECT and changes:  # started outside the recorder (/start)
                moved = await store.get_status(dispatch_id) or moved
            if changes or moved != status:
                status = moved
                await send(resp, "update", {"status": str(status), "nodes": changes})
        if status in (Status.COMPLETED, Status.FAILED, Status.CANCELLED):
            await send(resp, "end", {"status": str(status)})


async def stream_listing(request: web.Request, hub: LiveHub, store: DispatchStore,
                         shown: list[str], owner: str | None = None) -> web.StreamResponse:
    """Events ``rows`` (status and electron counts of the listed dispatches a commit touched)
    and ``new`` (a dispatch of ``owner``, if given, newer than every listed one started: the
    first page may reload); until the server stops or the browser goes."""
    return await _events(request, lambda resp: _follow_listing(resp, hub, store, shown, owner))


async def _follow_listing(resp: web.StreamResponse, hub: LiveHub, store: DispatchStore,
                          shown: list[str], owner: str | None) -> None:
    listed = set(shown)
    seen = set(shown)
    timed: dict[str, Status] = {}  # the status each row's times were last sent with
    with hub.watch(None) as w:
        hub.follow(None)
        while not w.closed:
            await w.wake.wait()
            _, _, touched = w.take()
            fresh = touched - seen
            if fresh:  # each dispatch is looked at once: a busy one on page 2 costs nothing
                seen |= fresh
                newest = (await store.page_dispatches(DispatchQuery(limit=1, owner=owner))).rows
                if newest and newest[0].dispatch_id in fresh:
                    await send(resp, "new", {"dispatch_id": newest[0].dispatch_id})
            mine = sorted(touched & listed)
            if mine:
                counts = await store.electron_counts(mine)
                rows = []
                for dispatch_id in mine:
                    status = await store.get_status(dispatch_id)
                    if status is None:
                        continue
                    row: dict[str, Any] = {"id": dispatch_id, "status": str(status),
                                           **done_total(counts[dispatch_id])}
                    if status != Status.NEW_OBJECT and timed.get(dispatch_id) != status:
                        # its times, once started and once ended: what a reload would show
                        record = await store.get_dispatch(dispatch_id)
                        if record is not None:
                            row["start"], row["end"] = record.start_time, record.end_time
                            timed[dispatch_id] = status
                    rows.append(row)
                await send(resp, "rows", rows)


def done_total(counts: dict[Status, int]) -> dict[str, int]:
    """Completed and total user electrons from per-status counts.

    >>> done_total({Status.COMPLETED: 3, Status.RUNNING: 1})
    {'done': 3, 'total': 4}
    """
    return {"done": counts.get(Status.COMPLETED, 0), "total": sum(counts.values())}
