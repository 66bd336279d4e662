"""A large input is written to disk as it arrives and reaches workers from the store (issue #11).

The dispatcher never holds a large value whole: its peak memory stays far below the size of
what it was sent; the value is not sent through Dask either (a worker reads it from the blob
store); a kill -9 and a restart keep it; an upload cut off half-way leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import socket
import uuid

import pytest

import covalent as ct
from covalent import wire
from covalent._dispatch import build_submission
from dispatcher.procinfo import peak_rss_mib, reset_peak_rss, rss_mib
from tests.conftest import wait_until
from tests.faults.conftest import ServerProcess
from tests.tasks import size_once_released

pytestmark = [pytest.mark.slow, pytest.mark.processes, pytest.mark.timeout(240)]

MIB = 96


@ct.lattice
def measure_input(data, release_file):
    return size_once_released(data, release_file)


async def test_a_large_input_is_spooled_to_disk_and_survives_kill9(server: ServerProcess,
                                                                   tmp_path) -> None:
    server.start()
    pid = server.proc.pid
    assert reset_peak_rss(pid)
    before = rss_mib(pid)
    release = tmp_path / "release"
    data = b"\x07" * (MIB << 20)

    dispatch_id = await asyncio.to_thread(
        ct.dispatch(measure_input, dispatcher_addr=server.addr), data, str(release))
    del data
    # The value and the inputs each arrived as a file: the server's memory barely moved.
    assert peak_rss_mib(pid) - before < MIB / 4, (peak_rss_mib(pid), before)
    blobs = [p for p in (server.data_dir / "blobs").rglob("*") if p.is_file()]
    assert len([p for p in blobs if p.stat().st_size >= MIB << 20]) == 2  # value and inputs
    assert list((server.data_dir / "uploads").iterdir()) == []

    server.kill9()
    server.start()
    release.touch()
    result = await asyncio.wait_for(asyncio.to_thread(
        ct.get_result, dispatch_id, True, server.addr), 120)
    assert result.status == ct.status.COMPLETED, result.error
    assert result.result == MIB << 20
    assert await asyncio.to_thread(lambda: len(result.inputs["args"][0])) == MIB << 20


async def test_an_upload_cut_off_half_way_leaves_nothing_behind(server: ServerProcess) -> None:
    server.start()
    dispatch_id = str(uuid.uuid4())
    body = await asyncio.to_thread(build_submission, measure_input, (b"\x01" * (8 << 20), "x"), {},
                                   dispatch_id=dispatch_id, disable_run=True)
    uploads = server.data_dir / "uploads"
    head = (f"POST {wire.API}/dispatches HTTP/1.1\r\nHost: {server.addr}\r\n"
            f"Authorization: Bearer {server.token}\r\nContent-Type: {wire.CONTENT_TYPE}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    try:
        await asyncio.to_thread(sock.sendall, head + body[: len(body) // 3])
        # The value is being written to a file as it arrives ...
        await wait_until(lambda: any(p.stat().st_size > 0 for p in uploads.iterdir()), timeout=30)
    finally:
        sock.close()  # ... and the client goes away half-way
    await wait_until(lambda: not any(uploads.iterdir()), timeout=30)
    with pytest.raises(ct.errors.DispatchNotFoundError):
        await asyncio.to_thread(ct.get_result, dispatch_id, False, server.addr)
    blobs = [p for p in (server.data_dir / "blobs").rglob("*") if p.is_file()]
    assert not [p for p in blobs if p.stat().st_size >= 8 << 20]
    # The same dispatch sent whole is accepted: nothing half-stored stands in its way.
    assert await asyncio.to_thread(_post_whole, server, body) == 201


def _post_whole(server: ServerProcess, body: bytes) -> int:
    import urllib.request

    req = urllib.request.Request(server.url + wire.API + "/dispatches", data=body, method="POST",
                                 headers={"Authorization": f"Bearer {server.token}",
                                          "Content-Type": wire.CONTENT_TYPE})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return int(resp.status)
