"""A Dask preload for the embedded cluster's worker processes: Ctrl-C is not theirs to take,
and what their nodes write is made with the user's own umask.

Ctrl-C in a terminal signals every process of its group. The dispatcher handles it and stops
its workers through their nannies, in order; a worker that died of it on its own left a
``KeyboardInterrupt`` traceback in the log each time (issue #21).

The dispatcher runs with umask 077 (its store is its user's alone) and its processes inherit
it: every file a node wrote was 0600, unreadable to the group a lab shares results with, where
plain Dask and Covalent honour the user's umask. The worker takes back the umask the dispatcher
was started with (``USER_UMASK``, octal); the store's own files are made 0600 explicitly
(``tempfile.mkstemp``) and live in the 0700 data dir.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

USER_UMASK = "COVALENT_USER_UMASK"


def dask_setup(worker: Any) -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        os.umask(int(os.environ[USER_UMASK], 8) & 0o777)
    except (KeyError, ValueError):
        pass  # not started by the dispatcher: the umask it has
