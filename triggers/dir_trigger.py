"""DirTrigger: fire once per ``batch_size`` file-system events under a directory (watchdog).

The watchdog observer thread hands each event to the server's loop with
``call_soon_threadsafe``; the coroutine counts them, so a burst loses no count.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from .base import BaseTrigger

EVENT_NAMES = ("created", "deleted", "modified", "moved", "closed")


class DirTrigger(BaseTrigger):
    """Watch a file or directory and trigger every ``batch_size`` events of ``event_names``."""

    def __init__(self, dir_path: str | os.PathLike[str], event_names: str | list[str],
                 batch_size: int = 1, lattice_dispatch_id: str | None = None,
                 dispatcher_addr: str | None = None, triggers_server_addr: str | None = None,
                 recursive: bool = False) -> None:
        super().__init__(lattice_dispatch_id, dispatcher_addr, triggers_server_addr)
        names = [event_names] if isinstance(event_names, str) else list(event_names)
        bad = [n for n in names if n not in EVENT_NAMES]
        if not names or bad:
            raise ValueError(f"event_names must be a subset of {list(EVENT_NAMES)}, got {event_names!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.dir_path = str(Path(dir_path).expanduser().resolve())
        self.event_names = names
        self.batch_size = batch_size
        self.recursive = bool(recursive)
        self.n_changes = 0
        self.observer: Any = None
        self.event_handler = FileSystemEventHandler()

    def attach_methods_to_handler(self, on_event: Callable[[FileSystemEvent], object] | None = None) -> None:
        """Point the handler's ``on_<event>`` methods for ``event_names`` at ``on_event``."""
        action = on_event or self._count_and_trigger
        for name in self.event_names:
            setattr(self.event_handler, f"on_{name}", action)

    def _count_and_trigger(self, event: FileSystemEvent) -> None:
        self.n_changes += 1
        if self.n_changes >= self.batch_size:
            self.n_changes = 0
            self.trigger()

    def _watch(self, on_event: Callable[[FileSystemEvent], object], every_event: bool = False) -> None:
        if not os.path.exists(self.dir_path):
            raise FileNotFoundError(f"DirTrigger path {self.dir_path} does not exist")
        if every_event:  # the server filters, and must see the watched path's own deletion
            self.event_handler.on_any_event = on_event  # type: ignore[method-assign,assignment]
        else:
            self.attach_methods_to_handler(on_event)
        self.observer = Observer()
        self.observer.schedule(self.event_handler, self.dir_path, recursive=self.recursive)
        self.observer.start()

    def observe(self) -> None:
        """Start watching (a watchdog thread); returns at once, as in Covalent."""
        self.stop_flag = threading.Event()
        self._watch(self._count_and_trigger)

    def stop(self) -> None:
        if self.observer is not None:
            self.observer.stop()
            self.observer.join(5)
            self.observer = None

    async def observe_async(self, fire: Callable[[], Awaitable[Any]], stopped: asyncio.Event,
                            ready: asyncio.Event) -> str:
        """The server's coroutine: count events handed over by watchdog, fire per batch."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[FileSystemEvent] = asyncio.Queue()
        await asyncio.to_thread(self._watch, lambda ev: loop.call_soon_threadsafe(queue.put_nowait, ev),
                                True)
        ready.set()
        stop_wait = asyncio.ensure_future(stopped.wait())
        try:
            while True:
                get = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({get, stop_wait}, timeout=5.0,
                                             return_when=asyncio.FIRST_COMPLETED)
                if stop_wait in done:
                    get.cancel()
                    return "stopped"
                if get not in done:
                    get.cancel()
                    if not os.path.exists(self.dir_path):
                        return f"watched path {self.dir_path} disappeared"
                    continue
                event = get.result()
                if event.event_type == "deleted" and os.fsdecode(event.src_path) == self.dir_path:
                    return f"watched path {self.dir_path} was deleted"
                if event.event_type not in self.event_names:
                    continue
                self.n_changes += 1
                if self.n_changes >= self.batch_size:
                    self.n_changes = 0
                    await fire()
        finally:
            stop_wait.cancel()
            await asyncio.to_thread(self.stop)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "dir_path": self.dir_path, "event_names": self.event_names,
                "batch_size": self.batch_size, "recursive": self.recursive,
                "n_changes": self.n_changes}
