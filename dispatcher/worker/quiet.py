"""A Dask preload for the embedded cluster's worker processes: Ctrl-C is not theirs to take.

Ctrl-C in a terminal signals every process of its group. The dispatcher handles it and stops
its workers through their nannies, in order; a worker that died of it on its own left a
``KeyboardInterrupt`` traceback in the log each time (issue #21).
"""

from __future__ import annotations

import signal
import threading
from typing import Any


def dask_setup(worker: Any) -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
