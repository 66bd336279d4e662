"""Observe built-in triggers as coroutines on the server's loop: timers and directory watches.

``observe_time`` awaits ``fire()`` every ``time_gap`` seconds, on a fixed cadence. ``observe_dir`` counts the events
one shared watchdog observer (``DirWatcher``) hands over through ``call_soon_threadsafe``, so a
burst loses no count, and fires once per ``batch_size``. It follows its path: the directory's
parent is watched too, so a directory moved away, deleted or replaced (``mv d d.old; mkdir
d``) is watched again as soon as the path exists again. Each returns the reason it ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import ObservedWatch

from covalent.triggers import DirTrigger, TimeTrigger

from .observing import Observing

log = logging.getLogger("covalent.triggers")


async def observe_time(trigger: TimeTrigger, ctx: Observing) -> str:
    """Await ``fire()`` every ``time_gap`` seconds until ``stopped``.

    The fires keep the cadence of the registration (at ``k * time_gap``): the time a fire takes
    does not push the next ones later. A tick missed while a fire ran longer is skipped.
    """
    loop = asyncio.get_running_loop()
    gap = trigger.time_gap
    due = loop.time() + gap
    ctx.ready.set()
    try:
        while True:
            ctx.next_fire(due)
            try:
                await asyncio.wait_for(ctx.stopped.wait(), max(0.0, due - loop.time()))
                return "stopped"
            except TimeoutError:
                await ctx.fire()
            due = next_due(due, loop.time(), gap)
    finally:
        ctx.next_fire(None)


def next_due(due: float, now: float, gap: float) -> float:
    """The next tick after the one ``due`` (just fired), skipping those already past at ``now``.

    >>> next_due(2.0, 2.03, 2.0)   # the fire took 30 ms: the next one stays at 4.0
    4.0
    >>> next_due(2.0, 7.1, 2.0)    # the fire ran past 4.0 and 6.0
    8.0
    """
    due += gap
    if due <= now:
        due += ((now - due) // gap + 1) * gap
    return due


@dataclass(frozen=True, slots=True, eq=False)
class DirWatch:
    """One handler's watch on a path, as ``DirWatcher.schedule`` hands it out."""

    watch: ObservedWatch
    handler: FileSystemEventHandler


class DirWatcher:
    """The server's one watchdog observer: every DirTrigger schedules its watches on it.

    watchdog keys a watch by its path: every handler on one path shares one emitter, and
    unscheduling the watch drops them all. So each handler is scheduled and unscheduled on its
    own here, and the watch goes only with its last handler: two DirTriggers on one directory
    (or on two directories in one parent, which both watch) keep firing when one of them stops.
    An emitter whose directory was deleted (it stops) or replaced (``mv d d.old; mkdir d``: it
    keeps watching ``d.old``) is started again by the next schedule on its path, with the
    handlers still there moved onto it.
    """

    def __init__(self) -> None:
        self._observer: Any = None
        self._lock = threading.Lock()  # schedule runs on worker threads, unschedule on the loop
        self._handlers: dict[ObservedWatch, list[FileSystemEventHandler]] = {}
        self._watching: dict[ObservedWatch, tuple[int, int] | None] = {}  # the emitter's directory

    def schedule(self, handler: FileSystemEventHandler, path: str, recursive: bool) -> DirWatch:
        """Watch ``path``; raises OSError (with the reason) when the system refuses."""
        with self._lock:
            if self._observer is None:
                self._observer = Observer()
                self._observer.start()
            # Before the emitter starts: a directory replaced in between renews it next time.
            identity = _identity(path)
            key = ObservedWatch(path, recursive=recursive)
            others = self._handlers.get(key, [])
            renew = bool(others) and (self._watching.get(key) != identity or not self._live(key))
            if renew:
                self._watching.pop(key, None)
                with contextlib.suppress(KeyError):
                    self._observer.unschedule(key)
            watch: ObservedWatch = self._observer.schedule(handler, path, recursive=recursive)
            if renew:
                for other in others:
                    self._observer.add_handler_for_watch(other, watch)
            self._handlers[watch] = [*others, handler]
            self._watching[watch] = identity
            return DirWatch(watch, handler)

    def _live(self, key: ObservedWatch) -> bool:
        return any(e.watch == key and e.should_keep_running() for e in list(self._observer.emitters))

    def unschedule(self, watch: DirWatch | None) -> None:
        """Stop handing ``watch``'s events to its handler (nothing if it is None or gone)."""
        if watch is None:
            return
        with self._lock:
            handlers = self._handlers.get(watch.watch, [])
            if self._observer is None or not any(h is watch.handler for h in handlers):
                return
            handlers.remove(watch.handler)
            with contextlib.suppress(KeyError):  # watchdog may have dropped it already
                if handlers:
                    self._observer.remove_handler_for_watch(watch.handler, watch.watch)
                else:
                    del self._handlers[watch.watch]
                    self._watching.pop(watch.watch, None)
                    self._observer.unschedule(watch.watch)

    def close(self) -> None:
        with self._lock:
            observer, self._observer = self._observer, None
            self._handlers.clear()
            self._watching.clear()
        if observer is not None:
            observer.stop()
            observer.join(5)


class _Forward(FileSystemEventHandler):
    """Hand every event to the loop, tagged with where it came from."""

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 queue: asyncio.Queue[tuple[Any, FileSystemEvent]], tag: Any) -> None:
        self.loop, self.queue, self.tag = loop, queue, tag

    def on_any_event(self, event: FileSystemEvent) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, (self.tag, event))


class _FollowedPath:
    """The watch on a DirTrigger's path, moved to whatever directory the path names now.

    Each watch gets its own handler tagged with a generation; events of an older generation
    (the directory that was moved away) are dropped once the move has been seen.
    """

    def __init__(self, watcher: DirWatcher, trigger: DirTrigger,
                 handler: Callable[[int], _Forward]) -> None:
        self.watcher, self.trigger, self.handler = watcher, trigger, handler
        self.watch: DirWatch | None = None
        self.identity: tuple[int, int] | None = None
        self.generation = 0
        # A replacement seen from the old directory's own events before the parent's event
        # about it: that parent event must not make us attach (and count) a second time.
        self.replaced_early = False

    def refresh(self, gone: bool = False) -> list[str]:
        """Watch the directory now at the path (nothing while it does not exist); return the
        entries a directory that replaced the watched one arrived with.

        ``gone``: the watched directory was deleted or moved away, even if a new one now has
        the same inode number (file systems reuse them).
        """
        identity = _identity(self.trigger.dir_path)
        if identity is None and self.generation == 0:
            self.generation = 1  # none when observing began: the one that comes is new
        if identity == self.identity and not gone:
            return []
        first = self.generation == 0
        self.generation += 1
        self.watcher.unschedule(self.watch)
        self.watch, self.identity = None, identity
        if identity is None:
            log.warning("DirTrigger path %s is gone; watching for it to come back",
                        self.trigger.dir_path)
            return []
        self.watch = self.watcher.schedule(self.handler(self.generation), self.trigger.dir_path,
                                           self.trigger.recursive)
        log.info("DirTrigger watches %s (inode %d)", self.trigger.dir_path, identity[1])
        return [] if first else self._arrived_with()

    def _arrived_with(self) -> list[str]:
        path = self.trigger.dir_path
        if not os.path.isdir(path):
            return []
        if not self.trigger.recursive:
            return [os.path.join(path, name) for name in os.listdir(path)]
        return [os.path.join(root, n) for root, dirs, files in os.walk(path) for n in dirs + files]


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return (st.st_dev, st.st_ino)


def _names_path(event: FileSystemEvent, path: str) -> bool:
    return any(os.fsdecode(p) == path for p in (event.src_path, getattr(event, "dest_path", "")) if p)


QUIET_S = 0.1  # on stop: events still arriving this soon after the last one are counted
DRAIN_MAX_S = 2.0  # ... but a stream that never pauses does not hold a stop up for longer


async def observe_dir(trigger: DirTrigger, ctx: Observing) -> str:
    """Fire once per ``batch_size`` events of ``event_names`` under ``trigger.dir_path``.

    A restored trigger (``ctx.restored``: registered before a restart) whose path, or the
    directory holding it, does not exist yet waits for it, saying so in ``last_error``. Once
    ``stopped``, the events already received are counted into ``n_changes`` (not fired: the
    batches they complete fire when observing starts again, after a restart).

    Raises:
        FileNotFoundError: the path of a new registration does not exist.
        OSError: the system refuses a watch (e.g. the inotify watch limit).
    """
    path = trigger.dir_path
    if not ctx.restored and not os.path.exists(path):
        raise FileNotFoundError(f"DirTrigger path {path} does not exist")
    parent = os.path.dirname(path) or "/"
    stop_wait = asyncio.ensure_future(ctx.stopped.wait())
    try:
        if not os.path.isdir(parent):
            ctx.report_error(f"waiting for {parent} (holding {path}) to exist")
            ctx.ready.set()
            if not await _wait_for_dir(ctx.watcher, parent, stop_wait):
                return "stopped"
            return await _observe_dir(trigger, ctx, parent, stop_wait, appeared=True)
        return await _observe_dir(trigger, ctx, parent, stop_wait, appeared=False)
    finally:
        stop_wait.cancel()


async def _observe_dir(trigger: DirTrigger, ctx: Observing, parent: str,
                       stop_wait: asyncio.Future[Any], appeared: bool) -> str:
    path, watcher, fire, stopped = trigger.dir_path, ctx.watcher, ctx.fire, ctx.stopped
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[Any, FileSystemEvent]] = asyncio.Queue()
    parent_watch = await asyncio.to_thread(watcher.schedule, _Forward(loop, queue, "parent"),
                                           parent, False)
    followed = _FollowedPath(watcher, trigger, lambda gen: _Forward(loop, queue, gen))
    if appeared:  # the path came after observing began: count what it arrived with
        followed.generation = 1
    counted: set[str] = set()

    async def fire_due() -> None:
        while trigger.n_changes >= trigger.batch_size and not stopped.is_set():
            trigger.n_changes -= trigger.batch_size
            if await fire() is None:  # stopped meanwhile: the batch fires after a restart
                trigger.n_changes += trigger.batch_size

    async def count(event_type: str) -> None:
        if event_type in trigger.event_names:
            trigger.n_changes += 1
            ctx.counted()
            await fire_due()

    async def follow(gone: bool = False) -> None:
        arrived = await asyncio.to_thread(followed.refresh, gone)
        ctx.report_error(None if followed.identity is not None
                         else f"waiting for {path} to exist")
        counted.update(arrived)
        for _ in arrived:
            await count("created")  # what the directory that replaced ours arrived with

    async def handle(tag: Any, event: FileSystemEvent) -> str | None:
        """One event; the reason observing ends, if it does."""
        if tag == "parent":
            if _names_path(event, path):  # a new generation drops the old one's events
                gone = (event.event_type in ("deleted", "moved")
                        and os.fsdecode(event.src_path) == path)
                if gone and followed.replaced_early:
                    followed.replaced_early = False  # already followed, see below
                else:
                    await follow(gone)
            elif event.event_type == "deleted" and os.fsdecode(event.src_path) == parent:
                return f"the directory {parent} holding {path} was deleted"
            return None
        if tag != followed.generation:
            return None  # from a directory that was moved away
        if followed.identity != _identity(path):  # moved away, not yet seen by the parent
            followed.replaced_early = True
            await follow()
            return None
        src = os.fsdecode(event.src_path)
        if event.event_type in ("deleted", "moved") and src == path:
            return None  # the path itself went away: the parent watch follows it
        if event.event_type == "created" and src in counted:
            counted.discard(src)  # seen in the listing of a replacing directory already
            return None
        await count(event.event_type)
        return None

    async def drain() -> None:
        """Count what arrived before the stop (and right after it, while events still come)."""
        deadline = loop.time() + DRAIN_MAX_S
        while True:
            try:
                tag, event = await asyncio.wait_for(
                    queue.get(), max(0.0, min(QUIET_S, deadline - loop.time())))
            except TimeoutError:
                return
            if await handle(tag, event) is not None:
                return

    try:
        await follow()
        ctx.ready.set()
        await fire_due()  # batches completed before a restart
        while True:
            get = asyncio.ensure_future(queue.get())
            await asyncio.wait({get, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            if not get.done():
                get.cancel()
                await drain()
                return "stopped"
            ended = await handle(*get.result())
            if ended is not None:
                return ended
    finally:
        watcher.unschedule(followed.watch)
        watcher.unschedule(parent_watch)


async def _wait_for_dir(watcher: DirWatcher, target: str, stop_wait: asyncio.Future[Any]) -> bool:
    """Wait until the directory ``target`` exists, watching its nearest existing ancestor;
    False if stopped first."""
    loop = asyncio.get_running_loop()
    while not os.path.isdir(target):
        below = target
        while not os.path.isdir(os.path.dirname(below)):
            below = os.path.dirname(below)
        queue: asyncio.Queue[tuple[Any, FileSystemEvent]] = asyncio.Queue()
        watch = await asyncio.to_thread(watcher.schedule, _Forward(loop, queue, None),
                                        os.path.dirname(below), False)
        try:
            while not os.path.isdir(below):  # checked after the watch began: no race
                get = asyncio.ensure_future(queue.get())
                await asyncio.wait({get, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                if not get.done():
                    get.cancel()
                    return False
        finally:
            watcher.unschedule(watch)
    return True
