"""DirTrigger: fire once per ``batch_size`` file-system events under a file or directory.

Registered with the dispatcher, it is observed there (one watchdog observer for every
DirTrigger, following the path if the directory is replaced). ``observe()`` here is the
stand-alone form, in the user's own process, as in Covalent.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from .base import BaseTrigger

EVENT_NAMES = ("created", "deleted", "modified", "moved", "closed")


class DirTrigger(BaseTrigger):
    """Watch a file or directory and trigger every ``batch_size`` events of ``event_names``."""

    _state_keys = ("n_changes",)

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

    def observe(self) -> None:
        """Start watching in a watchdog thread; returns at once, as in Covalent."""
        if not os.path.exists(self.dir_path):
            raise FileNotFoundError(f"DirTrigger path {self.dir_path} does not exist")
        self.stop_flag = threading.Event()
        self.attach_methods_to_handler()
        self.observer = Observer()
        self.observer.schedule(self.event_handler, self.dir_path, recursive=self.recursive)
        self.observer.start()

    def stop(self) -> None:
        if self.observer is not None:
            self.observer.stop()
            self.observer.join(5)
            self.observer = None

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "dir_path": self.dir_path, "event_names": self.event_names,
                "batch_size": self.batch_size, "recursive": self.recursive,
                "n_changes": self.n_changes}
