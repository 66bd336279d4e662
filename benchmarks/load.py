"""A loaded machine: CPU-bound processes running beside the benchmark (``--load N``).

A login node is shared; the dispatcher has more processes than raw Dask (its own, the scheduler
process, nannies), so it may suffer more from other jobs (issue #23). ``busy(n)`` starts ``n``
processes that spin in pure Python at normal priority for as long as the block runs, and stops
them by PID.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from .lifecycle import stop_process


@contextmanager
def busy(n: int) -> Iterator[list[int]]:
    """Run ``n`` CPU-bound processes for the block; their PIDs."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
             for _ in range(n)]
    try:
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            stop_process(p, {}, timeout=10)
