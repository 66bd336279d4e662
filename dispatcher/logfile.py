"""Keep the server log bounded: one line per cause of repeated errors, and rotation by size.

``covalent start`` sends the server's output (its log records, Dask's, anything printed) to
``server.log`` in the data dir. Nothing a client sends may grow it without bound (issue #21):

- ``OneLinePerCause`` turns a record carrying a traceback (aiohttp's "Error handling request"
  for each malformed request, about 550 bytes) into one line naming its cause, logged at most
  once a minute per cause with how many were left out;
- ``Rotation`` renames ``server.log`` to ``server.log.1`` (``.1`` to ``.2``, ...) once it passes
  ``max_bytes`` and points this process's stdout and stderr at a fresh ``server.log``, so every
  writer of the process follows. Worker processes started earlier keep their own descriptors
  (they log little). It does nothing when the output is not that file (a terminal, a test).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

MAX_BYTES = 64 << 20
BACKUPS = 3
REPEAT_S = 60.0


class Tally:
    """Log an event of each kind once, then at most every ``REPEAT_S`` with a count."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[float, int]] = {}  # kind -> (last logged, not logged since)

    def should_log(self, kind: str) -> tuple[bool, int]:
        """(log it now, how many went unlogged since the last time)."""
        now = time.monotonic()
        last, quiet = self._seen.get(kind, (-REPEAT_S * 2, 0))
        if now - last >= REPEAT_S:
            self._seen[kind] = (now, 0)
            return True, quiet
        self._seen[kind] = (last, quiet + 1)
        return False, 0




class OneLinePerCause(logging.Filter):
    """A record with a traceback becomes one line naming its cause, once a minute per cause."""

    def __init__(self) -> None:
        super().__init__()
        self._tally = Tally()

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return True
        cause = cause_of(exc)
        now, quiet = self._tally.should_log(cause)
        if not now:
            return False
        record.msg = f"{record.getMessage()}: {cause}" + (
            f" ({quiet} more since the last message)" if quiet else "")
        record.args = ()
        record.exc_info = record.exc_text = None
        return True


def cause_of(exc: BaseException) -> str:
    """``Type: what went wrong``, without what the client sent (bounded, one line).

    >>> cause_of(ValueError("400, message:\\n  Invalid header token:\\n\\n    b'Bad Header'"))
    'ValueError: 400, message: Invalid header token:'
    """
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()][:2]
    return f"{type(exc).__name__}: {' '.join(lines)}"[:200].encode("ascii", "replace").decode()


class Rotation(logging.Handler):
    """Rotate ``path`` when a record finds it past ``max_bytes`` (see the module doc)."""

    def __init__(self, path: Path, max_bytes: int = MAX_BYTES, backups: int = BACKUPS) -> None:
        super().__init__(level=logging.DEBUG)
        self.path, self.max_bytes, self.backups = path, max_bytes, max(1, backups)

    @staticmethod
    def applies(path: Path) -> bool:
        """True if this process's stderr is the file ``path``."""
        try:
            own, log = os.fstat(2), os.stat(path)
        except OSError:
            return False
        return (own.st_dev, own.st_ino) == (log.st_dev, log.st_ino)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if os.fstat(2).st_size > self.max_bytes:
                self.rotate()
        except OSError:
            self.handleError(record)

    def rotate(self) -> None:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        for i in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.dup2(fd, 1)
            os.dup2(fd, 2)
        finally:
            os.close(fd)


def setup(log_path: Path, max_bytes: int = MAX_BYTES) -> None:
    """Bound the server's log: one line per cause for aiohttp's errors, rotation when this
    process's stderr is ``log_path``."""
    logging.getLogger("aiohttp.server").addFilter(OneLinePerCause())
    if Rotation.applies(log_path):
        logging.getLogger().addHandler(Rotation(log_path, max_bytes))


def tail_lines(path: Path, count: int, limit: int = 8 << 20, since: int = 0) -> list[str]:
    """The last ``count`` lines of ``path`` written after byte ``since`` (all of a file that
    was rotated meanwhile), reading at most its last ``limit`` bytes."""
    with open(path, "rb") as fh:
        size = fh.seek(0, 2)
        start = since if since <= size else 0
        cut = size - limit > start
        fh.seek(max(size - limit, start))
        lines = fh.read().decode("utf-8", "replace").splitlines()
    return (lines[1:] if cut else lines)[-count:] if count > 0 else []
