"""Stream stored blobs to clients, from disk or an object store, never holding one whole.

A framed answer (``covalent.wire.frame``) is written as its header, then each blob in chunks
read off the event loop. Large transfers take a slot of a small semaphore, so a crowd of big
downloads cannot take the server's memory or all its disk bandwidth at once (issue #11).
"""

from __future__ import annotations

import asyncio
from typing import IO, Any

from aiohttp import web

from covalent import wire

from .offload import off_loop
from .store import BlobSource
from .worker.blobs import open_location

CHUNK = 1 << 20
LARGE = 64 << 20  # a transfer this big waits for a slot
LARGE_SLOTS = web.AppKey("large_transfers", asyncio.Semaphore)
STORE_ROOT = web.AppKey("blob_root", tuple)  # (local blob directory, fsspec storage options)


def setup(app: web.Application, slots: int = 4) -> None:
    app[LARGE_SLOTS] = asyncio.Semaphore(slots)


async def stream_frame(request: web.Request, header: dict[str, Any],
                       blobs: list[BlobSource]) -> web.StreamResponse:
    """``header`` and ``blobs`` as one framed body."""
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
        for blob in blobs:
            await _write_blob(request, resp, blob)
        await resp.write_eof()
    return resp


async def stream_blob(request: web.Request, blob: BlobSource) -> web.StreamResponse:
    """One blob's bytes (``application/octet-stream``)."""
    resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    resp.content_length = blob.size
    async with _slot(request, blob.size):
        await resp.prepare(request)
        await _write_blob(request, resp, blob)
        await resp.write_eof()
    return resp


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


async def _write_blob(request: web.Request, resp: web.StreamResponse, blob: BlobSource) -> None:
    if blob.data is not None:
        await resp.write(blob.data)
        return
    assert blob.location is not None
    store = request.app[STORE_ROOT]
    fh: IO[bytes] = await asyncio.to_thread(open_location, blob.location, store[0], store[1])
    try:
        while chunk := await asyncio.to_thread(fh.read, CHUNK):
            await resp.write(chunk)
    finally:
        await asyncio.to_thread(fh.close)

