"""Write what the runner learns to the store, behind its back, in batches: the Recorder.

Updates are queued by ``record`` (never awaited on the hot path) and written by one writer
task that commits whatever accumulated while the previous commit ran: natural batching, no
timer. After each commit, and only then, ``_announce`` tells the subscribers (a web UI's live
updates, the long-polls waiting for a dispatch to end): whatever anyone hears of is on disk.

A batch that cannot be written is never retried as it is forever: a full disk keeps the facts
without the outputs (those nodes FAILED, with the reason), a record SQLite refuses is isolated
and fails its node; a store locked by another process is retried, and waiters hear why.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from covalent.wire import clean_text

from .errors import is_busy_error, is_disk_error
from .protocol import now_iso
from . import state
from .state import DispatchUpdate, NodeUpdate, Status, node_failed
from .store import DispatchStore

log = logging.getLogger("covalent.dispatcher")

RETRY_S = 1.0  # after a failed write: how long before the same batch is tried again


@dataclass(frozen=True, slots=True)
class Commit:
    """What one transaction made durable; ``ended`` are dispatches whose final status it holds."""

    nodes: list[NodeUpdate]
    dispatches: list[DispatchUpdate]
    ended: list[str]


Subscriber = Callable[[Commit], None]


class Recorder:
    """The write-behind queue between the runner and the store; one per server."""

    def __init__(self, store: DispatchStore) -> None:
        self.store = store
        self._nodes: list[NodeUpdate] = []
        self._dispatches: list[DispatchUpdate] = []
        self._ended: list[str] = []
        self._dirty = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._writing = asyncio.Lock()  # one batch in flight: a flush waits for it to commit
        self._subscribers: list[Subscriber] = []
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self.closing = False
        self.write_error: str | None = None  # why the last write failed (None: it did not)
        self.write_busy = False  # ... because another process locks the store
        self.unwritten: set[str] = set()  # dispatches whose latest facts are not on disk
        self.store_failed: dict[str, str] = {}  # dispatch id -> why some output was not stored

    async def start(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name="covalent-recorder")

    def stop_waiting(self) -> None:
        """The server is stopping: every waiter returns now, and later ones at once (a client
        long-polling for a dispatch's end must not hold the stop; it reads what is committed,
        and the SDK waits on through the restart)."""
        self.closing = True
        for waiters in self._waiters.values():
            for ev in waiters:
                ev.set()

    async def close(self) -> None:
        """Answer every waiter (the server is stopping), write what is queued, stop."""
        self.stop_waiting()
        if self._writer is not None:
            try:
                await self.flush()
            except Exception:  # logged by _flush; the dispatches stay RUNNING on disk
                log.error("stopping with %d updates not written (%s); dispatches %s resume when "
                          "the server starts again", len(self._nodes) + len(self._dispatches),
                          self.write_error, ", ".join(sorted(self.unwritten)) or "(none)")
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)

    # -- what the runner calls -------------------------------------------------------------

    @property
    def backlog(self) -> int:
        """Updates recorded and not written yet (for /metrics)."""
        return len(self._nodes) + len(self._dispatches)

    def record(self, *updates: NodeUpdate | DispatchUpdate) -> None:
        for u in updates:
            (self._nodes if isinstance(u, NodeUpdate) else self._dispatches).append(u)  # type: ignore[arg-type]
        self._dirty.set()

    def ended(self, update: DispatchUpdate) -> None:
        """Record a dispatch's final status; its waiters wake once it is committed."""
        self._ended.append(update.dispatch_id)
        self.record(update)

    async def flush(self) -> None:
        """Commit everything recorded so far: the batch the writer may have on its way too (a
        read after ``flush`` sees every update recorded before it, or ``flush`` raises)."""
        await self._flush()

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        """Call ``fn`` after every commit (on the loop); returns the unsubscribe function."""
        self._subscribers.append(fn)
        return lambda: self._subscribers.remove(fn) if fn in self._subscribers else None

    def waiter(self, dispatch_id: str) -> asyncio.Event:
        """An event set once the dispatch's final status is committed (or the server stops).

        Register it *before* reading the status, then ``release`` it when done waiting.
        """
        ev = asyncio.Event()
        if self.closing:
            ev.set()
        self._waiters.setdefault(dispatch_id, set()).add(ev)
        return ev

    def wake(self, dispatch_id: str) -> None:
        """Another replica committed the dispatch's final status: its waiters here read it."""
        for ev in self._waiters.get(dispatch_id, ()):
            ev.set()

    def release(self, dispatch_id: str, ev: asyncio.Event) -> None:
        waiters = self._waiters.get(dispatch_id)
        if waiters is not None:
            waiters.discard(ev)
            if not waiters:
                del self._waiters[dispatch_id]

    # -- writing ---------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await self._flush()
            except Exception:  # already logged and kept: back off, then try the batch again
                await asyncio.sleep(RETRY_S)
                self._dirty.set()

    async def _flush(self) -> None:
        async with self._writing:
            await self._flush_queued()

    async def _flush_queued(self) -> None:
        nodes, dispatches, ended = self._nodes, self._dispatches, self._ended
        self._nodes, self._dispatches, self._ended = [], [], []
        if not (nodes or dispatches):
            self._announce(Commit([], [], ended))
            return
        try:
            nodes, dispatches = await self._write(nodes, dispatches)
        except Exception as exc:  # even the fallbacks failed: keep serving, say why, retry
            self.write_busy = is_busy_error(exc)
            self.write_error = f"{type(exc).__name__}: {exc}"
            log.exception("store write failed; %d node updates kept for retry", len(nodes))
            self._nodes[:0], self._dispatches[:0], self._ended[:0] = nodes, dispatches, ended
            self.unwritten = {u.dispatch_id for u in nodes} | {d.dispatch_id for d in dispatches}
            for dispatch_id in self.unwritten:  # tell those waiting, rather than hang
                for ev in self._waiters.get(dispatch_id, ()):
                    ev.set()
            raise
        self.write_error = None
        self.unwritten.clear()
        for dispatch_id in ended:  # its final status is on disk: nothing left to settle
            self.store_failed.pop(dispatch_id, None)
        self._announce(Commit(nodes, dispatches, ended))

    def _announce(self, commit: Commit) -> None:
        """The one place a commit is announced: waiters of ended dispatches, then subscribers."""
        for dispatch_id in commit.ended:
            for ev in self._waiters.pop(dispatch_id, ()):
                ev.set()
        if commit.nodes or commit.dispatches:
            for fn in list(self._subscribers):
                try:
                    fn(commit)
                except Exception:  # a subscriber's bug must not stop recording
                    log.exception("commit subscriber failed")

    async def _write(self, nodes: list[NodeUpdate], dispatches: list[DispatchUpdate]
                     ) -> tuple[list[NodeUpdate], list[DispatchUpdate]]:
        """One transaction, else the fallbacks; returns what was written."""
        dispatches = [self._settled(d) for d in dispatches]
        try:
            await self.store.apply(nodes, dispatches)
            return nodes, dispatches
        except Exception as exc:
            if is_busy_error(exc):
                raise  # another process holds the database: the same batch will go through
            if is_disk_error(exc):
                # The outputs do not fit: record those nodes (and their dispatches) as
                # FAILED with the reason, which takes a few bytes, rather than nothing.
                log.error("store full: %d outputs not stored: %s", len(nodes), exc)
                nodes, dispatches = self._without_outputs(nodes, dispatches, exc)
                await self.store.apply(nodes, dispatches)
                return nodes, dispatches
            log.error("a batch of %d updates cannot be written (%s: %s); isolating the bad one",
                      len(nodes) + len(dispatches), type(exc).__name__, exc)
            return await self._isolate(nodes, dispatches)

    async def _isolate(self, nodes: list[NodeUpdate], dispatches: list[DispatchUpdate]
                       ) -> tuple[list[NodeUpdate], list[DispatchUpdate]]:
        """Write each update alone; one that fails fails its node (and dispatch) with the reason."""
        written_nodes: list[NodeUpdate] = []
        for u in nodes:
            try:
                await self.store.apply([u], [])
                written_nodes.append(u)
            except Exception as exc:
                if is_busy_error(exc) or is_disk_error(exc):
                    raise
                reason = (f"the dispatcher could not record this node ({type(exc).__name__}: "
                          f"{clean_text(str(exc), 2000)})")
                log.error("node %s of %s: %s", u.node_id, u.dispatch_id, reason)
                self.store_failed.setdefault(u.dispatch_id, reason)
                written_nodes += (await self._apply_or_drop(
                    [node_failed(u.dispatch_id, u.node_id, reason, now_iso())], []))[0]
        written_dispatches: list[DispatchUpdate] = []
        for d in map(self._settled, dispatches):
            try:
                await self.store.apply([], [d])
                written_dispatches.append(d)
            except Exception as exc:
                if is_busy_error(exc) or is_disk_error(exc):
                    raise
                reason = f"the dispatcher could not record it: {type(exc).__name__}: {exc}"
                log.error("dispatch %s: %s", d.dispatch_id, reason)
                written_dispatches += (await self._apply_or_drop([], [DispatchUpdate(
                    d.dispatch_id, status=Status.FAILED, end_time=now_iso(), error=reason)]))[1]
        return written_nodes, written_dispatches

    async def _apply_or_drop(self, nodes: list[NodeUpdate], dispatches: list[DispatchUpdate]
                             ) -> tuple[list[NodeUpdate], list[DispatchUpdate]]:
        try:
            await self.store.apply(nodes, dispatches)
            return nodes, dispatches
        except Exception as exc:
            if is_busy_error(exc) or is_disk_error(exc):
                raise
            log.exception("dropping an update that cannot be written at all: %s", exc)
            return [], []

    def _without_outputs(self, nodes: list[NodeUpdate], dispatches: list[DispatchUpdate],
                         exc: BaseException) -> tuple[list[NodeUpdate], list[DispatchUpdate]]:
        reason = (f"the dispatcher could not store this output ({type(exc).__name__}: {exc}); "
                  "free space in its data dir and redispatch")
        out_nodes = []
        for u in nodes:
            if u.output is not None:
                self.store_failed.setdefault(u.dispatch_id, reason)
                u = replace(u, status=Status.FAILED, output=None, error=reason)
            # What a node printed is kept only as a note of its size: the outcome matters more.
            u = replace(u, stdout=_shed(u.stdout, "stdout"), stderr=_shed(u.stderr, "stderr"))
            out_nodes.append(u)
        for d in dispatches:
            if d.result is not None:
                self.store_failed.setdefault(d.dispatch_id, reason)
        return out_nodes, [self._settled(d) for d in dispatches]

    def _settled(self, d: DispatchUpdate) -> DispatchUpdate:
        """A dispatch's final record, settled against the updates of it that could not be
        written (the state machine decides the final status as the last outcome arrives,
        which can be before the write of that outcome fails)."""
        return state.settled(d, self.store_failed.get(d.dispatch_id))


def _shed(text: str | None, stream: str) -> str | None:
    if not text or len(text) <= 200:
        return text
    return f"[{len(text)} characters of {stream} not stored: the dispatcher's store is full]"


async def dispatch_ended(recorder: Recorder, dispatch_id: str) -> None:
    """Return once the dispatch's final status is committed (or the server stops)."""
    ev = recorder.waiter(dispatch_id)
    try:
        await ev.wait()
    finally:
        recorder.release(dispatch_id, ev)
