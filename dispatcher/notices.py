"""Tell the replicas sharing a database what happened elsewhere: dispatches that ended, cancels,
triggers to stop.

Any replica accepts any request. A cancel for a dispatch another replica runs is stored in
``cancel_requests`` and announced (``NOTIFY covalent, 'cancel <id>'``); the replica holding
the dispatch's lease carries it out and writes its answer into the request (the response,
or the error: the dispatch had ended), which the replica that stored it reads, gives its
client and deletes. A dispatch that ends with cancels unanswered answers them as ended (its
replica, or any replica's sweep if that one stopped); answers nobody came for are deleted
after ``ANSWER_KEPT_S``. A dispatch's final status is announced by the replica that commits
it (``'ended <id>'``, in that transaction), which wakes the long-polls
(``get_result(wait=True)``) waiting on every replica. A thread LISTENs on a connection of its
own; every ``SWEEP_S`` the requests are read again in case a notice was missed (the
connection broke), and a replica taking a dispatch over, or starting one, reads them at once.
A trigger to stop is announced (``'stop-triggers <id>,<id>'``) by the replica asked, again
every second until the store says it stopped (``TriggerService``); the one observing it stops it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import psycopg

from .errors import DispatchState, NotRunningHere
from .protocol import now_iso
from .recorder import Recorder
from .state import TERMINAL, sql_list
from .store import SqlStore
from .store.sql import Db

log = logging.getLogger("covalent.dispatcher")

SWEEP_S = 2.5
LISTEN_WAIT_S = 1.0  # the listener's wait for notices, before it looks whether to stop
ANSWER_KEPT_S = 600.0  # an answered cancel whose asker gave up waiting is deleted after this
Cancel = Callable[[str, list[int]], Awaitable[Any]]  # (dispatch id, nodes or []) on the owner


class Notices:
    """The LISTEN side and the cancel requests of one replica."""

    def __init__(self, store: SqlStore, conninfo: str, recorder: Recorder, owns: Callable[[str], bool],
                 cancel: Cancel) -> None:
        self.store, self.conninfo, self.recorder = store, conninfo, recorder
        self.owns, self.cancel = owns, cancel
        self.stop_triggers: Callable[[list[str]], Awaitable[Any]] | None = None  # observed here
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # a channel only this replica listens on: a notice there wakes its listener to stop
        self._wake_channel = f"covalent_wake_{uuid.uuid4().hex}"
        self._sweeper: asyncio.Task[None] | None = None
        self._busy: set[str] = set()
        self._again: set[str] = set()  # asked to handle while handling: read the requests again

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._listen, args=(loop,), daemon=True,
                                        name="covalent-notices")
        self._thread.start()
        self._sweeper = asyncio.create_task(self._sweep(), name="covalent-cancel-sweep")

    async def close(self) -> None:
        self._stop.set()
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        if self._thread is not None:
            await asyncio.to_thread(self._wake_listener)
            await asyncio.to_thread(self._thread.join, 5)

    def _wake_listener(self) -> None:
        """End the listener's wait for notices now, not at its next timeout (every stop of a
        server on PostgreSQL took a second longer)."""
        try:
            with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=2) as conn:
                conn.execute(f'NOTIFY "{self._wake_channel}"')
        except psycopg.Error:
            pass  # the database is away: the listener's wait ends at its timeout

    # -- a non-owner's cancel --------------------------------------------------------------

    async def request_cancel(self, dispatch_id: str, nodes: list[int], wait_s: float = 30.0
                             ) -> dict[str, Any] | None:
        """Store a cancel for the replica that runs the dispatch; its answer once it carried it
        out (``{"ok": response}`` or ``{"error": class name, "message": ...}``; ``{}`` if the
        request went without one), None if not within ``wait_s`` (the replica that takes the
        dispatch over will carry it out)."""
        request_id = str(uuid.uuid4())

        def put(db: Db) -> None:
            db.execute("INSERT INTO cancel_requests(request_id, dispatch_id, nodes, requested_at)"
                       " VALUES (?,?,?,?)", (request_id, dispatch_id, json.dumps(nodes), now_iso()))
            db.execute("SELECT pg_notify('covalent', ?)", (f"cancel {dispatch_id}",))

        await self.store._write(put)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while loop.time() < deadline:
            rows = await self.store._read(lambda db: db.execute(
                "SELECT answer FROM cancel_requests WHERE request_id = ?", (request_id,)).fetchall())
            if not rows:
                return {}  # taken without an answer (a replica of a version before answers)
            if rows[0][0] is not None:
                await self.store._write(_delete, request_id)
                answer: dict[str, Any] = json.loads(rows[0][0])
                return answer
            await asyncio.sleep(0.1)  # another process acts on it: nothing to await but the row
        return None

    async def announce_stop(self, trigger_ids: list[str]) -> None:
        """Ask every replica to stop these triggers if it observes them (``stop-triggers``)."""
        def put(db: Db) -> None:
            for i in range(0, len(trigger_ids), 100):  # a notice holds under 8,000 bytes
                db.execute("SELECT pg_notify('covalent', ?)",
                           (f"stop-triggers {','.join(trigger_ids[i:i + 100])}",))

        await self.store._write(put)

    # -- the owner's side ------------------------------------------------------------------

    async def handle(self, dispatch_id: str) -> None:
        """Carry out the stored cancels of a dispatch this replica runs, and answer each. Asked
        again while at it (a notice of a request stored after its read), it reads once more."""
        if not self.owns(dispatch_id):
            return
        if dispatch_id in self._busy:
            self._again.add(dispatch_id)
            return
        self._busy.add(dispatch_id)
        try:
            while True:
                self._again.discard(dispatch_id)
                rows = await self.store._read(lambda db: db.execute(
                    "SELECT request_id, nodes FROM cancel_requests WHERE dispatch_id = ?"
                    " AND answer IS NULL ORDER BY requested_at", (dispatch_id,)).fetchall())
                for request_id, nodes in rows:
                    answer: dict[str, Any]
                    try:
                        answer = {"ok": await self.cancel(dispatch_id,
                                                          list(json.loads(nodes or "[]")))}
                    except NotRunningHere:  # moved on (or ended, not yet on disk): not ours
                        continue
                    except Exception as exc:  # ended meanwhile: nothing left to cancel
                        log.info("cancel of %s: %s", dispatch_id, exc)
                        answer = {"error": type(exc).__name__, "message": str(exc)}
                    await self.store._write(_answer, request_id, json.dumps(answer))
                if dispatch_id not in self._again:
                    return
        finally:
            self._busy.discard(dispatch_id)
            self._again.discard(dispatch_id)

    async def answer_ended(self, dispatch_id: str, status: str) -> None:
        """The dispatch ended (``status``, on disk) with cancels of it still unanswered: none
        was carried out, so each is answered as a cancel of an ended dispatch is."""
        if dispatch_id in self._busy:
            return  # being carried out now: that answers them
        answer = json.dumps({"error": "DispatchState",
                             "message": str(DispatchState.ended(dispatch_id, status))})
        try:
            await self.store._write(lambda db: db.execute(
                "UPDATE cancel_requests SET answer = ? WHERE dispatch_id = ? AND answer IS NULL",
                (answer, dispatch_id)))
        except Exception as exc:  # the database is away: a sweep answers them later
            log.warning("could not answer the cancels of ended dispatch %s: %s", dispatch_id, exc)

    async def _answer_orphans(self) -> None:
        """Answer the cancels of dispatches that ended unanswered a while ago (the replica
        that ran them stopped before it could)."""
        before = _iso_ago(4 * SWEEP_S)
        rows = await self.store._read(lambda db: db.execute(
            "SELECT DISTINCT r.dispatch_id, d.status FROM cancel_requests r JOIN dispatches d"
            " ON d.dispatch_id = r.dispatch_id WHERE r.answer IS NULL AND r.requested_at < ?"
            f" AND d.status IN {sql_list(TERMINAL)} AND COALESCE(d.end_time, r.requested_at) < ?",
            (before, before)
        ).fetchall())
        for dispatch_id, status in rows:
            await self.answer_ended(dispatch_id, status)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            try:
                rows = await self.store._read(lambda db: db.execute(
                    "SELECT DISTINCT dispatch_id FROM cancel_requests WHERE answer IS NULL"
                ).fetchall())
                for (dispatch_id,) in rows:
                    await self.handle(dispatch_id)
                await self._answer_orphans()
                await self.store._write(_forget_answers, _iso_ago(ANSWER_KEPT_S))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: the next sweep
                log.warning("could not read cancel requests: %s", exc)

    def _heard(self, payload: str) -> None:
        kind, _, dispatch_id = payload.partition(" ")
        if kind == "ended":
            self.recorder.wake(dispatch_id)
        elif kind == "cancel":
            _in_background(self.handle(dispatch_id))
        elif kind == "stop-triggers" and self.stop_triggers is not None:
            _in_background(self.stop_triggers(dispatch_id.split(",")))

    def _listen(self, loop: asyncio.AbstractEventLoop) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=3,
                                     application_name="covalent-notices") as conn:
                    conn.execute("LISTEN covalent")
                    conn.execute(f'LISTEN "{self._wake_channel}"')
                    while not self._stop.is_set():
                        for n in conn.notifies(timeout=LISTEN_WAIT_S):
                            if n.channel == self._wake_channel:
                                break
                            loop.call_soon_threadsafe(self._heard, n.payload)
            except psycopg.Error as exc:
                log.warning("listening for other replicas failed (%s); again in 1 s", exc)
                self._stop.wait(1.0)
            except RuntimeError:  # the loop closed under us: the server is stopping
                return


def _in_background(work: Awaitable[Any]) -> None:
    """Run ``work`` on the loop without waiting; its failure is its own (it logs, or a sweep
    tries again), never an unretrieved exception."""
    task = asyncio.ensure_future(work)
    task.add_done_callback(lambda t: t.cancelled() or t.exception())


def _delete(db: Db, request_id: str) -> None:
    db.execute("DELETE FROM cancel_requests WHERE request_id = ?", (request_id,))


def _answer(db: Db, request_id: str, answer: str) -> None:
    db.execute("UPDATE cancel_requests SET answer = ? WHERE request_id = ?", (answer, request_id))


def _forget_answers(db: Db, before: str) -> None:
    db.execute("DELETE FROM cancel_requests WHERE answer IS NOT NULL AND requested_at < ?",
               (before,))


def _iso_ago(seconds: float) -> str:
    """``now_iso()`` as it read ``seconds`` ago (the same format: its strings sort by time)."""
    return (datetime.fromisoformat(now_iso()) - timedelta(seconds=seconds)).isoformat()
