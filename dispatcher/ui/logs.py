"""Read the server log for the logs page: newest first, searched, one page at a time.

The log is the file ``covalent start`` sends the server's output to (``server.log`` in the data
dir, also what ``covalent logs`` prints). A server run another way (``python -m dispatcher`` in
a terminal, the tests) has no such file: then the page shows the records this process logged
since it started, kept by a ``LogBuffer`` (a bounded ring, attached while the app runs).
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass
from pathlib import Path

TAIL_BYTES = 8 * 1024 * 1024  # the end of a huge log is what a person looks for
PAGE = 200


class LogBuffer(logging.Handler):
    """The last ``capacity`` formatted records of this process."""

    def __init__(self, capacity: int = 5000) -> None:
        super().__init__(level=logging.INFO)
        self.lines: collections.deque[str] = collections.deque(maxlen=capacity)
        self.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.extend(self.format(record).splitlines())
        except Exception:  # logging must never raise into the code that logs
            self.handleError(record)


@dataclass(frozen=True, slots=True)
class LogPage:
    lines: list[str]  # newest first
    page: int
    pages: int
    matching: int
    source: str  # the file read, or "this process" for the buffer


def read_tail(path: Path, limit: int = TAIL_BYTES) -> list[str]:
    """The lines of the last ``limit`` bytes of ``path`` (a partial first line dropped)."""
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        size = fh.tell()
        fh.seek(max(size - limit, 0))
        data = fh.read()
    lines = data.decode("utf-8", "replace").splitlines()
    return lines[1:] if size > limit and lines else lines


def page_of(lines: list[str], query: str, page: int, source: str, per_page: int = PAGE) -> LogPage:
    """Newest first, lines containing ``query`` (any case), page ``page`` (1-based).

    >>> p = page_of(["a 1", "b 2", "a 3"], "A", 1, "x", per_page=1)
    >>> p.lines, p.pages, p.matching
    (['a 3'], 2, 2)
    """
    needle = query.strip().lower()
    found = [ln for ln in reversed(lines) if needle in ln.lower()] if needle else lines[::-1]
    pages = max(1, -(-len(found) // per_page))
    page = min(max(page, 1), pages)
    return LogPage(found[(page - 1) * per_page : page * per_page], page, pages, len(found), source)


def read_page(path: Path, buffer: LogBuffer, query: str, page: int) -> LogPage:
    """A page of the server log (blocking: run it in a thread)."""
    if path.exists():
        return page_of(read_tail(path), query, page, str(path))
    return page_of(list(buffer.lines), query, page, "this process (no log file: the server "
                   "was not started by `covalent start`)")
