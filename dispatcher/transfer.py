"""Stream stored blobs to clients, from disk or an object store, never holding a large one whole.

A framed answer (``covalent.wire.frame``) is written as its header, then each blob in chunks
read off the event loop. Large transfers take a slot of a small semaphore, so a crowd of big
downloads cannot take the server's memory or all its disk bandwidth at once (issue #11).

What is sent is what was stored (issue #21): before the status line goes out, every blob file
is checked to be there with its recorded size (a stat each; for a frame, local files only: an
object store's PUTs are whole), so a missing or truncated blob is a clear error answer, not a
200 cut off. A frame of local files of ``WHOLE`` bytes at most (a Result's few outputs) is read
and hashed whole in one call off the loop before anything is sent, so a damaged blob there is
an error answer too. Otherwise, while it is sent, each blob is hashed (the next chunk is read
and hashed while the previous one is written), and its last chunk goes out only once the hash
is right; one whose bytes do not match its address is removed (the next write of that value
puts it back) and the connection is closed, so the client sees a cut-off answer at once
instead of waiting for bytes that never come. A local file hashed whole once is sent unhashed
again while its size, mtime and inode stay the same (``Verified``): hashing runs at about
1 GB/s, which would double the time of every large download.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import os
from typing import IO, Any

from aiohttp import web

from covalent import wire

from .offload import off_loop
from .store import BlobSource
from .worker.blobs import DamagedBlob, Hashed, is_url, open_location, remove_location, size_at

log = logging.getLogger("covalent.dispatcher")

CHUNK = 1 << 20
WHOLE = 8 << 20  # a frame whose blob files total this much at most is read whole before it is sent
LARGE = 64 << 20  # a transfer this big waits for a slot
LARGE_SLOTS = web.AppKey("large_transfers", asyncio.Semaphore)
STORE_ROOT = web.AppKey("blob_root", tuple)  # (local blob directory, fsspec storage options)
Stamp = tuple[str, int, int, int]  # a local blob file: (location, size, mtime ns, inode)


class Verified:
    """Stamps of the local blob files this server hashed whole and found right (the newest
    ``limit``): their bytes are sent again without hashing while the stamp holds."""

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self._stamps: collections.OrderedDict[Stamp, None] = collections.OrderedDict()

    def __contains__(self, stamp: object) -> bool:
        return stamp in self._stamps

    def add(self, stamp: Stamp) -> None:
        self._stamps[stamp] = None
        if len(self._stamps) > self.limit:
            self._stamps.popitem(last=False)


VERIFIED = web.AppKey("verified_blobs", Verified)


def setup(app: web.Application, slots: int = 4) -> None:
    app[LARGE_SLOTS] = asyncio.Semaphore(slots)
    app[VERIFIED] = Verified()


async def stream_frame(request: web.Request, header: dict[str, Any],
                       blobs: list[BlobSource]) -> web.StreamResponse:
    """``header`` and ``blobs`` as one framed body."""
    whole = await _read_whole(request, blobs)
    if whole is not None:
        blobs, stamps = whole, {}
    else:
        stamps = await _check(request, blobs, remote=False)
    # Off the loop, a member at a time: a 100,000-node result's header is tens of MiB.
    nodes = header.get("nodes")
    head = (await off_loop(len(nodes) if isinstance(nodes, list) else 0, wire.pieces.dumps,
                           {**header, "blob_sizes": [b.size for b in blobs]})).encode()
    prefix = wire.MAGIC + len(head).to_bytes(4, "big") + head
    total = len(prefix) + sum(b.size for b in blobs)
    resp = web.StreamResponse(headers={"Content-Type": wire.CONTENT_TYPE})
    resp.content_length = total
    async with _slot(request, total):
        await resp.prepare(request)
        await resp.write(prefix)
        await _send(request, resp, blobs, stamps)
    return resp


async def _read_whole(request: web.Request, blobs: list[BlobSource]
                      ) -> list[BlobSource] | None:
    """A small frame's blobs with their bytes (local files of ``WHOLE`` bytes in all at most),
    checked as ``_check`` does, read and hashed whole in one call off the loop before anything
    is sent: a result's few outputs cost one thread hop instead of five or more per file, and
    a damaged one is an error answer rather than a cut-off one. None: stream them."""
    files = [b for b in blobs if b.data is None]
    if sum(b.size for b in files) > WHOLE or any(
            b.location is None or is_url(b.location) or b.location.startswith("file://")
            for b in files):
        return None
    if not files:
        return blobs
    root, options = request.app[STORE_ROOT]
    verified = request.app[VERIFIED]

    def read(blob: BlobSource, stamp: Stamp | None) -> bytes:
        assert blob.location is not None
        try:
            with open(os.path.join(root, blob.location), "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            raise DamagedBlob(blob.ref, "is missing") from None
        if stamp is None or stamp not in verified:
            hashed = Hashed(blob.ref, blob.size)
            hashed.update(data)  # a file cut short since it was checked fails here too
            try:
                hashed.check()
            except DamagedBlob:
                remove_location(blob.location, root, options)
                raise
        return data

    def read_all() -> tuple[list[BlobSource], list[Stamp]]:
        stamps = _checked(files, root, options)
        out = [b if b.data is not None else dataclasses.replace(b, data=read(b, stamps.get(b.ref)))
               for b in blobs]
        return out, [st for st in stamps.values() if st not in verified]

    out, checked = await asyncio.to_thread(read_all)
    for stamp in checked:
        verified.add(stamp)
    return out


async def stream_blob(request: web.Request, blob: BlobSource) -> web.StreamResponse:
    """One blob's bytes (``application/octet-stream``)."""
    stamps = await _check(request, [blob], remote=True)
    resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    resp.content_length = blob.size
    async with _slot(request, blob.size):
        await resp.prepare(request)
        await _send(request, resp, [blob], stamps)
    return resp


async def _check(request: web.Request, blobs: list[BlobSource], remote: bool
                 ) -> dict[str, Stamp]:
    """DamagedBlob (an error answer, before anything is sent) for a blob file that is missing
    or has the wrong size (a wrong one is removed); the stamps of the local files."""
    files = [b for b in blobs if b.data is None and b.location is not None
             and (remote or not is_url(b.location))]
    if not files:
        return {}
    root, options = request.app[STORE_ROOT]
    return await asyncio.to_thread(_checked, files, root, options)


def _checked(files: list[BlobSource], root: str, options: dict[str, Any]) -> dict[str, Stamp]:
    """``_check``'s work, in a thread: the stamps of the local files among ``files``."""
    stamps: dict[str, Stamp] = {}
    for blob in files:
        assert blob.location is not None
        stamp = _stamp(blob.location, root)
        found = stamp[1] if stamp is not None else size_at(blob.location, root, options)
        if found is None:
            raise DamagedBlob(blob.ref, "is missing")
        if found != blob.size:
            remove_location(blob.location, root, options)
            raise DamagedBlob(blob.ref, f"has {found} bytes, not {blob.size} (removed)")
        if stamp is not None:
            stamps[blob.ref] = stamp
    return stamps


def _stamp(location: str, root: str) -> Stamp | None:
    """A local blob file's stamp; None for a URL, or a file that is not there."""
    if is_url(location):
        return None
    try:
        st = os.stat(os.path.join(root, location))
    except FileNotFoundError:
        return None
    return (location, st.st_size, st.st_mtime_ns, st.st_ino)


class _slot:
    """A large-transfer slot for transfers over ``LARGE`` bytes; nothing for small ones."""

    def __init__(self, request: web.Request, size: int) -> None:
        self.sem = request.app[LARGE_SLOTS] if size > LARGE else None

    async def __aenter__(self) -> None:
        if self.sem is not None:
            await self.sem.acquire()

    async def __aexit__(self, *exc: Any) -> None:
        if self.sem is not None:
            self.sem.release()


async def _send(request: web.Request, resp: web.StreamResponse, blobs: list[BlobSource],
                stamps: dict[str, Stamp]) -> None:
    """Every blob, then the end; a damaged one closes the connection (see the module doc)."""
    try:
        for blob in blobs:
            await _write_blob(request, resp, blob, stamps.get(blob.ref))
    except DamagedBlob as exc:
        log.error("%s %s cut off: %s; it was removed, and the next write of that value puts "
                  "it back", request.method, request.path, exc)
        if request.transport is not None:
            request.transport.close()
        return
    await resp.write_eof()


async def _write_blob(request: web.Request, resp: web.StreamResponse, blob: BlobSource,
                      stamp: Stamp | None) -> None:
    if blob.data is not None:
        await resp.write(blob.data)
        return
    assert blob.location is not None
    root, options = request.app[STORE_ROOT]
    try:
        fh: IO[bytes] = await asyncio.to_thread(open_location, blob.location, root, options)
    except FileNotFoundError:
        raise DamagedBlob(blob.ref, "is missing") from None
    verified = request.app[VERIFIED]
    known = stamp is not None and stamp in verified
    hashed = Hashed(blob.ref, blob.size)

    def read() -> bytes:
        chunk = fh.read(CHUNK)
        if not known:
            hashed.update(chunk)
        return chunk

    pending = asyncio.ensure_future(asyncio.to_thread(read))
    try:
        while chunk := await pending:
            if not known and hashed.seen >= blob.size:  # the last chunk goes out once it is right
                hashed.check()
                if stamp is not None:
                    verified.add(stamp)
                await resp.write(chunk)
                return
            pending = asyncio.ensure_future(asyncio.to_thread(read))  # while this one is sent
            await resp.write(chunk)
        if not known:
            hashed.check()  # the file ended early
    except DamagedBlob:
        await asyncio.to_thread(remove_location, blob.location, root, options)
        raise
    finally:
        await asyncio.gather(pending, return_exceptions=True)  # a read still running ends first
        await asyncio.to_thread(fh.close)
