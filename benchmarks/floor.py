"""The disk's floor for a workload's outputs: write the same bytes as files, then read them back.

Ours keeps a durable copy of every output (the blob store, in the dispatcher's data dir); raw
Dask keeps none. ``write_read_s`` times what that copy costs at the least on this disk: each
output's bytes written to a new file in the same directory tree as the blob store, the way the
store writes (a temporary name, then a rename; no fsync, as the store does not), then every
file read back whole. ``os.sync()`` runs first, so writes another side left buffered are not
charged here. The bytes come from ``os.urandom`` once, outside the timing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

CHUNK = 64 << 20  # the source buffer is reused for larger files


def write_read_s(sizes: list[int], directory: Path) -> float:
    """Seconds to write files of ``sizes`` bytes under ``directory``, then read them back."""
    directory.mkdir(parents=True, exist_ok=True)
    source = memoryview(os.urandom(min(max(sizes, default=0), CHUNK)))
    work = Path(tempfile.mkdtemp(prefix="floor-", dir=directory))
    try:
        os.sync()
        start = time.perf_counter()
        paths = [_write(work, i, size, source) for i, size in enumerate(sizes)]
        for path in paths:
            with open(path, "rb") as fh:
                while fh.read(CHUNK):
                    pass
        return time.perf_counter() - start
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _write(work: Path, i: int, size: int, source: memoryview) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=work)
    with os.fdopen(fd, "wb") as fh:
        left = size
        while left > 0:
            n = min(left, len(source))
            fh.write(source[:n])
            left -= n
    target = work / f"blob-{i}"
    os.replace(tmp, target)
    return target
