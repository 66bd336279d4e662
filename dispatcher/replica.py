"""Hold this replica's leases: several dispatchers on one PostgreSQL database (issue #26).

Each running dispatch and each active trigger is acted on by the one replica holding its
lease (``store.leases``). This replica renews what it holds every ``renew_s`` (2.5 s) for
``ttl_s`` (10 s) on a connection of its own, so a busy pool never delays a renewal; every
``renew_s`` it also takes the leases nobody holds (a replica died, or was paused past its
lease) and hands them to ``on_acquired``, which resumes them as a restart does. A server
started again on the data dir of one that died takes that one's leases at once (``succeed``).

Stopping before anyone may take over: a lease counts here only while less than
``ttl_s - MARGIN_S`` has passed (monotonic clock) since the renewal that last succeeded was
*sent*; the database's expiry is later than that, so this replica stops acting on a
resource (``epoch`` returns None, ``on_lost`` is called) before any other may take it. A
process paused by SIGSTOP sees the whole pause on waking (the monotonic clock kept running),
and its writes that were already on the way are refused by the SQL fence.

Renewals run in a thread of their own, not on the event loop: a loop held for seconds by
one piece of work (a large graph parsed on it, once 10-18 s) used to let every lease of the
replica lapse and be taken over by another replica, or by itself, over and over. A lease
says the process is alive, and it still must be able to act: the thread renews only while
the loop has run within ``LOOP_LIVE_S``, so a loop stuck for good gives its leases up.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from .errors import StoreBusy, StoreError
from .store import leases
from .store.postgres import PgDb, store_error

log = logging.getLogger("covalent.dispatcher")

T = TypeVar("T")
TTL_S = 10.0
RENEW_S = 2.5
MARGIN_S = 1.0  # a lease counts here for ttl - 1 s after its renewal was sent (short TTLs: ttl/4)
LOOP_LIVE_S = 30.0  # leases are renewed only while the event loop ran within this
OWNER_FILE = "replica.owner"  # in the data dir: the owner name of the replica that runs on it

Handler = Callable[[str, int], Awaitable[None]]


class Replica:
    """This dispatcher's leases (one per server, PostgreSQL only)."""

    def __init__(self, conninfo: str, *, ttl_s: float = TTL_S, renew_s: float = RENEW_S,
                 owner: str | None = None, loop_live_s: float = LOOP_LIVE_S) -> None:
        self.conninfo = conninfo
        self.ttl_s = ttl_s
        self.renew_s = renew_s
        self.margin_s = min(MARGIN_S, ttl_s / 4)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.held: dict[str, tuple[int, float]] = {}  # resource -> (epoch, monotonic sent)
        self.on_acquired: Handler | None = None
        self.on_lost: Callable[[str], None] | None = None
        self._conn = _Connection(conninfo, "covalent-leases")  # the loop's, in _executor
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="covalent-lease")
        self._task: asyncio.Task[None] | None = None
        self._taking: set[asyncio.Task[None]] = set()
        # ``held`` is changed by the loop (acquire, release, a lapse) and by the renewal thread:
        # each check-and-change of an entry is made under this lock.
        self._held_lock = threading.Lock()
        self.loop_live_s = loop_live_s
        self._beat = time.monotonic()  # the event loop's last heartbeat
        self._beat_handle: asyncio.TimerHandle | None = None
        self._renewer: threading.Thread | None = None
        self._stopping = threading.Event()
        self._renew_conn = _Connection(conninfo, "covalent-lease-renewal")  # the thread's

    # -- what the rest of the server asks ----------------------------------------------------

    def epoch(self, resource: str) -> int | None:
        """The epoch this replica holds ``resource`` at, if it may still act on it."""
        held = self.held.get(resource)
        if held is None:
            return None
        if time.monotonic() - held[1] >= self.ttl_s - self.margin_s:
            self._lose(resource, "not renewed in time", held[0], lapsed=True)
            return self.epoch(resource)  # None, unless renewed by the thread this instant
        return held[0]

    def owner_epoch(self, resource: str) -> tuple[str, int] | None:
        epoch = self.epoch(resource)
        return None if epoch is None else (self.owner, epoch)

    async def acquire(self, resource: str) -> int | None:
        """Take ``resource`` if nobody holds it; its epoch, else None."""
        sent = time.monotonic()
        epoch = await self._sql(leases.acquire, resource, self.owner, self.ttl_s)
        if epoch is not None:
            with self._held_lock:
                self.held[resource] = (epoch, sent)
        return epoch

    async def release(self, resource: str) -> None:
        """Give ``resource`` up (the dispatch ended, the trigger stopped, the server stops)."""
        with self._held_lock:
            held = self.held.pop(resource, None)
        if held is not None:
            try:
                await self._sql(leases.release, resource, self.owner, held[0])
            except Exception as exc:  # it expires anyway
                log.warning("could not release %s: %s", resource, exc)

    async def succeed(self, data_dir: Path) -> int:
        """Name this replica in ``data_dir`` and take at once the leases of the server that
        ran on it before (how many): called only while this process holds the data dir's lock
        (``dispatcher.instance``), so that server has exited, whatever killed it. A restart
        after a crash resumes its dispatches and triggers now rather than when their leases
        expire (``ttl_s``); a replica on another data dir still waits them out."""
        path = data_dir / OWNER_FILE
        try:
            previous = path.read_text().strip()
        except (FileNotFoundError, UnicodeDecodeError):
            previous = ""
        written = path.with_name(f".{OWNER_FILE}.tmp")
        written.write_text(self.owner)  # before any lease is taken: a successor knows them all
        os.replace(written, path)
        if not previous or previous == self.owner:
            return 0
        try:
            freed = await self._sql(leases.forsake, previous)
        except (OSError, StoreError) as exc:  # they expire anyway
            log.warning("could not take over what %s held: %s", previous, exc)
            return 0
        if freed:
            log.info("taking over at once what %s held (%d leases): it ran on this data dir "
                     "before and has exited", previous, freed)
        return freed

    # -- the loop --------------------------------------------------------------------------

    async def start(self) -> None:
        """Take what nobody holds, observe its triggers (dispatches resume in the background,
        the server answers meanwhile), then renew and take over every ``renew_s``."""
        try:
            await self.take_unowned()
            triggers = [t for t in self._taking if t.get_name().startswith("trigger:")]
            await asyncio.wait_for(asyncio.gather(*triggers, return_exceptions=True), 30)
        except (OSError, TimeoutError, StoreError) as exc:  # the loop tries again
            log.warning("could not take over at start: %s", exc)
        loop = asyncio.get_running_loop()
        self._heartbeat(loop)
        self._renewer = threading.Thread(target=self._renew_thread, args=(loop,),
                                         name="covalent-lease-renewal", daemon=True)
        self._renewer.start()
        self._task = asyncio.create_task(self._loop(), name="covalent-leases")

    async def close(self) -> None:
        """Stop renewing and give every lease up, so another replica takes them at once."""
        self._stopping.set()
        if self._beat_handle is not None:
            self._beat_handle.cancel()
        tasks = [t for t in (self._task, *self._taking) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._renewer is not None:  # (a renewal under way ends within its statement_timeout)
            await asyncio.to_thread(self._renewer.join, 10)
        for resource in list(self.held):
            await self.release(resource)
        await asyncio.get_running_loop().run_in_executor(self._executor, self._disconnect)
        self._executor.shutdown(wait=False)

    async def _loop(self) -> None:
        while True:
            try:
                await self.take_unowned()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: the next round tries again
                log.warning("could not look for leases nobody holds: %s", exc)
            for resource in list(self.held):
                self.epoch(resource)  # what lapsed is given up here, on the loop
            await asyncio.sleep(self.renew_s)

    def _heartbeat(self, loop: asyncio.AbstractEventLoop) -> None:
        self._beat = time.monotonic()
        self._beat_handle = loop.call_later(min(1.0, self.renew_s), self._heartbeat, loop)

    def _renew_thread(self, loop: asyncio.AbstractEventLoop) -> None:
        """Every ``renew_s``, renew what is held, on a connection of its own, while the
        event loop is alive; what could not be renewed is given up on the loop."""
        while not self._stopping.wait(self.renew_s):
            stalled = time.monotonic() - self._beat
            if stalled >= self.loop_live_s:
                log.warning("leases not renewed: the event loop has not run for %.0f s", stalled)
                continue
            try:
                lost = self._renew_once(self._renew_conn)
            except Exception as exc:  # the database is away: leases lapse locally meanwhile
                log.warning("lease renewal failed: %s", exc)
                continue
            for resource, epoch in lost:
                try:
                    loop.call_soon_threadsafe(self._lose, resource, "its lease was taken", epoch)
                except RuntimeError:  # the loop closed: the server is stopping
                    return

    async def renew(self) -> None:
        """Renew what is held now (the thread does it every ``renew_s``)."""
        lost = await asyncio.get_running_loop().run_in_executor(self._executor, self._renew_once,
                                                                 self._conn)
        for resource, epoch in lost:
            self._lose(resource, "its lease was taken", epoch)

    def _renew_once(self, conn: _Connection) -> list[tuple[str, int]]:
        """One renewal on ``conn``; the (resource, epoch) the database refused."""
        now = time.monotonic()
        with self._held_lock:  # what lapsed here is not asked for (the loop gives it up)
            held = [(r, e) for r, (e, t) in self.held.items()
                    if now - t < self.ttl_s - self.margin_s]
        if not held:
            return []
        sent = time.monotonic()
        renewed = conn.run(leases.renew, self.owner, held, self.ttl_s)
        lost = []
        with self._held_lock:
            for resource, epoch in held:
                if self.held.get(resource, (0, 0.0))[0] != epoch:
                    continue  # released, or taken anew, meanwhile
                if renewed.get(resource) == epoch:
                    self.held[resource] = (epoch, sent)
                else:
                    lost.append((resource, epoch))
        return lost

    async def take_unowned(self) -> list[str]:
        """Take the leases nobody holds; ``on_acquired`` resumes each (in the background)."""
        taken = []
        for resource in await self._sql(leases.unowned):
            try:
                epoch = await self.acquire(resource)
            except StoreBusy as exc:  # its holder is committing a write (leases.hold)
                log.info("could not take %s yet: %s", resource, exc)
                continue
            if epoch is None:
                continue  # another replica was quicker
            log.info("took over %s (epoch %d)", resource, epoch)
            taken.append(resource)
            if self.on_acquired is not None:
                task = asyncio.create_task(self._take(resource, epoch), name=resource)
                self._taking.add(task)
                task.add_done_callback(self._taking.discard)
        return taken

    async def _take(self, resource: str, epoch: int) -> None:
        assert self.on_acquired is not None
        try:
            await self.on_acquired(resource, epoch)
        except asyncio.CancelledError:
            raise
        except Exception:  # let it lapse: another replica (or this one) tries again
            log.exception("could not resume %s", resource)
            with self._held_lock:
                if self.held.get(resource, (0, 0.0))[0] == epoch:
                    del self.held[resource]

    def _lose(self, resource: str, why: str, epoch: int, lapsed: bool = False) -> None:
        """Stop acting on ``resource`` held at ``epoch`` (on the loop); ``lapsed``: because
        it was not renewed in time (unless the thread renewed it meanwhile)."""
        with self._held_lock:
            held = self.held.get(resource, (0, 0.0))
            if held[0] != epoch:
                return  # given up already, or taken anew since
            if lapsed and time.monotonic() - held[1] < self.ttl_s - self.margin_s:
                return
            del self.held[resource]
        log.warning("stopped acting on %s: %s", resource, why)
        if self.on_lost is not None:
            self.on_lost(resource)

    # -- SQL on this replica's own connection -------------------------------------------------

    async def _sql(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._conn.run,
                                                                fn, *args)

    def _disconnect(self) -> None:
        self._conn.close()
        self._renew_conn.close()  # (its thread has ended)


class _Connection:
    """A connection of this replica's own, used by one thread at a time; made again when it
    broke (a statement is tried once more on the new one)."""

    def __init__(self, conninfo: str, name: str) -> None:
        self.conninfo, self.name = conninfo, name
        self.conn: psycopg.Connection[Any] | None = None

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(db, *args)`` in one transaction."""
        for attempt in (1, 2):
            try:
                if self.conn is None or self.conn.closed:
                    self.conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=3,
                                                application_name=self.name)
                    self.conn.execute("SET statement_timeout = 3000")
                with self.conn.transaction():
                    return fn(PgDb(self.conn), *args)
            except psycopg.OperationalError as exc:
                self.close()
                if attempt == 2:  # the protocol's error: a request waiting on it answers 503
                    raise store_error(exc) from exc
            except psycopg.Error as exc:  # e.g. past statement_timeout: StoreBusy, 503
                raise store_error(exc) from exc
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except psycopg.Error:
                pass
            self.conn = None
