"""Capture each worker thread's stdout and stderr, bounded, while it runs a node.

What a running node has printed so far stays readable from outside its thread: ``so_far``
looks it up in this process's registry of running captures (keyed by dispatch and node id).
The dispatcher calls it on the node's worker (``Client.run``) only while someone looks at the
node in the web UI (issue #24), so nothing is sent per node otherwise.
"""

from __future__ import annotations

import codecs
import collections
import io
import threading
from typing import Any

from covalent.wire import TEXT_LIMIT, clean_text


class _Router(io.TextIOBase):
    """A sys.stdout/sys.stderr stand-in that sends each thread's writes to its own buffer."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.local = threading.local()
        self._bytes = _BytesRouter(self)

    def write(self, s: str) -> int:
        buf = getattr(self.local, "buf", None)
        if buf is None:
            return int(self.inner.write(s))
        return int(buf.write(s))

    def flush(self) -> None:
        if getattr(self.local, "buf", None) is None:
            self.inner.flush()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return str(getattr(self.inner, "encoding", "utf-8"))

    def isatty(self) -> bool:
        return False

    @property
    def buffer(self) -> _BytesRouter:
        """``sys.stdout.buffer``, for code that writes bytes: decoded (UTF-8) into the same
        capture (a ``StringIO``, as Covalent captures with, has none, and such code failed)."""
        return self._bytes


class _BytesRouter(io.RawIOBase):
    """The bytes side of a ``_Router``: each thread's writes decoded as UTF-8 (a character
    split across writes is joined), then written as text."""

    def __init__(self, text: _Router) -> None:
        self.text = text
        self.local = threading.local()

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        decoder = getattr(self.local, "decoder", None)
        if decoder is None:
            decoder = self.local.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        data = bytes(b)
        self.text.write(decoder.decode(data))
        return len(data)

    def flush(self) -> None:
        self.text.flush()


_router_lock = threading.Lock()


def _routers() -> tuple[_Router, _Router]:
    import sys

    out, err = sys.stdout, sys.stderr
    if isinstance(out, _Router) and isinstance(err, _Router):
        return out, err  # installed already (every node but the first): no lock
    with _router_lock:
        if not isinstance(sys.stdout, _Router):
            sys.stdout = _Router(sys.stdout)
        if not isinstance(sys.stderr, _Router):
            sys.stderr = _Router(sys.stderr)
        return sys.stdout, sys.stderr


class Bounded(io.TextIOBase):
    """A text buffer that keeps the first and the last ``limit // 2`` characters written, so a
    node printing a gigabyte costs its worker a megabyte (issue #11)."""

    def __init__(self, limit: int = TEXT_LIMIT) -> None:
        self.half = (limit - 64) // 2  # head, marker and tail within ``limit``: never cut again
        self.head: list[str] = []
        self.head_len = 0
        self.tail: collections.deque[str] = collections.deque()
        self.tail_len = 0
        self.total = 0
        self.lock = threading.Lock()  # the node's thread writes; a reader (so_far) may look

    def write(self, s: str) -> int:
        with self.lock:
            return self._write(s)

    def _write(self, s: str) -> int:
        n = len(s)
        self.total += n
        room = self.half - self.head_len
        if room > 0:
            self.head.append(s[:room])
            self.head_len += min(room, n)
            s = s[room:]
        if s:
            self.tail.append(s)
            self.tail_len += len(s)
            while self.tail_len - len(self.tail[0]) >= self.half:
                self.tail_len -= len(self.tail.popleft())
        return n

    def getvalue(self) -> str:
        if not self.total:
            return ""  # nothing printed, most nodes
        with self.lock:
            head, tail = "".join(self.head), "".join(self.tail)[-self.half:] if self.tail else ""
        left_out = self.total - len(head) - len(tail)
        marker = f"\n[... {left_out} characters left out ...]\n" if left_out else ""
        return clean_text(head + marker + tail, limit=self.total + len(marker))


Key = tuple[str, int]  # (dispatch id, node id)
_running: dict[Key, Capture] = {}  # this process's running nodes' captures (see so_far)


class Capture:
    """Capture this thread's prints for the duration of a ``with`` block; with a ``key``, what
    was printed so far can be read meanwhile (``so_far``)."""

    def __init__(self, key: Key | None = None) -> None:
        self.key = key

    def __enter__(self) -> Capture:
        self.out_router, self.err_router = _routers()
        self.out, self.err = Bounded(), Bounded()
        self.out_router.local.buf = self.out
        self.err_router.local.buf = self.err
        if self.key is not None:
            _running[self.key] = self
        return self

    def __exit__(self, *exc: Any) -> None:
        self.out_router.local.buf = None
        self.err_router.local.buf = None
        if self.key is not None and _running.get(self.key) is self:
            del _running[self.key]


def so_far(dispatch_id: str, node_id: int) -> dict[str, str] | None:
    """What the node has printed so far, if it is running in this process (run by the
    dispatcher on a worker through ``Client.run``)."""
    cap = _running.get((dispatch_id, node_id))
    if cap is None:
        return None
    return {"stdout": cap.out.getvalue(), "stderr": cap.err.getvalue()}
