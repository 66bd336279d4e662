"""Read a dispatch submission as it arrives, never holding a large blob whole (issue #11).

The framed body (``covalent.wire.frame``) announces every blob's size in its header, which comes
first; so the header is read and parsed, then each blob in turn: a small one into memory, a
large one that may be spooled (parameter values, the inputs, the lattice) into a file of the
upload directory in 1 MiB chunks, hashed as it is written. The store then moves the file into
the blob store instead of reading it (``StoredBlob``). A failed or abandoned upload leaves
nothing behind: its files are removed, and the upload directory is emptied at start.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import StreamReader

from covalent import wire

from .errors import InvalidRequest, PayloadTooLarge
from .offload import INLINE_BYTES, off_loop
from .store import StoredBlob

SPOOL_MIN = 1 << 20  # blobs at least this large go to disk as they arrive
CHUNK = 1 << 20
HEADER_MAX = 512 << 20  # the graph of a 100,000-node workflow is tens of MB


@dataclass(slots=True)
class Upload:
    """A submission read off the wire: its header, its blobs in memory (a spooled blob's
    place holds ``b""``) and the spooled ones by index."""

    header: dict[str, Any]
    blobs: list[bytes]
    spooled: dict[int, StoredBlob] = field(default_factory=dict)
    graph_text: str | None = None  # the header's graph as the client wrote it (JSON)

    def merged(self) -> list[bytes | StoredBlob]:
        """The blobs as the store takes them."""
        return [self.spooled.get(i, b) for i, b in enumerate(self.blobs)]

    def discard(self) -> None:
        """Remove the files of blobs the store has not taken."""
        for blob in self.spooled.values():
            if blob.path is not None:
                Path(blob.path).unlink(missing_ok=True)


def reset(directory: Path) -> None:
    """Empty (or create, owner-only) the upload directory: what is in it was abandoned."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)


async def read_frame(content: StreamReader, length: int | None, limit: int, directory: Path,
                     spoolable: Callable[[dict[str, Any]], set[int]]) -> Upload:
    """Read a framed body from ``content``; blobs whose index ``spoolable(header)`` names and
    that are at least ``SPOOL_MIN`` bytes are written to files in ``directory``.

    Raises InvalidRequest (malformed or truncated) or PayloadTooLarge (over ``limit``).
    """
    if length is not None and length > limit:
        raise PayloadTooLarge(f"body of {length} bytes exceeds the limit of {limit}")
    try:
        hlen = wire.header_length(await _exactly(
            content, 8, "the body is not a covalent frame (bad magic or too short)"))
        if hlen > min(HEADER_MAX, limit):
            raise PayloadTooLarge(f"frame header of {hlen} bytes exceeds the limit of "
                                  f"{min(HEADER_MAX, limit)}")
        head = await _exactly(content, hlen, "the frame header is truncated")
        header, sizes, kept = await off_loop(len(head), wire.parse_header_keeping, head,
                                             ("graph",), limit=INLINE_BYTES)
    except wire.WireError as exc:
        raise InvalidRequest(str(exc)) from None
    total = 8 + hlen + sum(sizes)
    if total > limit:
        raise PayloadTooLarge(f"body of {total} bytes exceeds the limit of {limit}")
    if length is not None and length != total:
        raise InvalidRequest(f"frame blobs hold {length - 8 - hlen} bytes but blob_sizes add up "
                             f"to {sum(sizes)}")
    upload = Upload(header, [], graph_text=kept.get("graph"))
    try:
        spool = spoolable(header)
    except Exception:  # a malformed header: parse_submission says why, with the blobs read
        spool = set()
    try:
        for index, size in enumerate(sizes):
            if index % 512 == 511:
                await asyncio.sleep(0)  # 200,000 small blobs, already buffered, must not hold the loop
            if size >= SPOOL_MIN and index in spool:
                upload.spooled[index] = await _spool(content, size, directory)
                upload.blobs.append(b"")
            else:
                upload.blobs.append(await _exactly(content, size))
        if await content.read(1):
            raise InvalidRequest(f"frame blobs hold more bytes than blob_sizes add up to ({sum(sizes)})")
    except BaseException:
        upload.discard()
        raise
    return upload


async def _exactly(content: StreamReader, n: int, why: str = "") -> bytes:
    try:
        return await content.readexactly(n)
    except asyncio.IncompleteReadError as exc:
        raise InvalidRequest(why or f"the body ended early: {len(exc.partial)} of {n} bytes of "
                             "a blob arrived") from None


async def _spool(content: StreamReader, size: int, directory: Path) -> StoredBlob:
    fd, path = tempfile.mkstemp(prefix="upload-", dir=directory)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as fh:
            left = size
            while left:
                chunk = await _exactly(content, min(CHUNK, left))
                left -= len(chunk)
                await asyncio.to_thread(_write, fh, digest, chunk)
    except BaseException:
        Path(path).unlink(missing_ok=True)
        raise
    return StoredBlob(digest.hexdigest(), size, path)


def _write(fh: Any, digest: Any, chunk: bytes) -> None:
    digest.update(chunk)
    fh.write(chunk)
