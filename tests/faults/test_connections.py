"""A crowd of idle connections cannot lock people out of a dispatcher process, or flood its log
(issues #11, #21)."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import subprocess
import uuid
from pathlib import Path

import pytest

import covalent as ct
from covalent import wire
from covalent._dispatch import build_submission
from tests.conftest import wait_until
from tests.faults.conftest import ServerProcess
from tests.other_user import OtherUser, other_user  # noqa: F401  (fixture)
from tests.tasks import big_bytes, gate, two_node

pytestmark = [pytest.mark.slow, pytest.mark.processes, pytest.mark.timeout(120)]


def _status_code(server: ServerProcess) -> int:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(server.url + "/api/v1/status",
                                 headers={"Authorization": f"Bearer {server.token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _fate(s: socket.socket) -> str:
    """What the server did with an idle connection: closed it, refused it (503), or kept it."""
    s.settimeout(0.5)
    try:
        data = s.recv(4096)
    except TimeoutError:
        return "open"  # waiting for a request that never comes
    return "refused" if data.startswith(b"HTTP/1.1 503") else "closed" if data == b"" else "?"


async def test_idle_connections_make_room_and_a_full_server_answers_503_with_one_log_line(
        server: ServerProcess) -> None:
    server.env["COVALENT_MAX_CONNECTIONS"] = "20"
    server.start()
    idle = []
    try:
        for _ in range(300):  # slow clients: connect, send nothing, stay
            idle.append(socket.create_connection(("127.0.0.1", server.port), timeout=10))
        # New ones closed the oldest idle ones (those that came faster than the server could
        # look at them got 503): at most 15 (3/4 of 20) stay pending, and the owner gets in.
        fates = await asyncio.to_thread(lambda: [_fate(s) for s in idle])
        assert fates.count("open") <= 15 and fates.count("closed") > 0
        assert set(fates) <= {"open", "closed", "refused"}
        assert await asyncio.to_thread(_status_code, server) == 200
        # Clients that authenticated stay; past the limit a new one is told to retry.
        kept = []
        for _ in range(20):
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            conn.request("GET", "/api/v1/health", headers={"Authorization": f"Bearer {server.token}"})
            assert conn.getresponse().read() and True
            kept.append(conn)
        assert await asyncio.to_thread(_status_code, server) == 503
        for conn in kept:
            conn.close()
    finally:
        for s in idle:
            s.close()
    # The crowd gone, everything works again; the log holds one line about each kind of it.
    await wait_until(lambda: asyncio.to_thread(lambda: _status_code(server) == 200), timeout=30)
    dispatch_id = await asyncio.to_thread(ct.dispatch(two_node, dispatcher_addr=server.addr), 2, 3)
    result = await asyncio.to_thread(ct.get_result, dispatch_id, True, server.addr)
    assert result.result == 10
    log = server.log.read_text()
    assert log.count("connection limit of 20 reached") == 1  # the refusals of both kinds
    assert log.count("closed a connection that sent no authenticated request") == 1
    assert "Traceback" not in log


def _established(port: int) -> int:
    """Connections to ``port`` the kernel has established (IPv4 loopback)."""
    with open("/proc/net/tcp") as fh:
        return sum(1 for line in fh if line.split()[1].endswith(f":{port:04X}")
                   and line.split()[3] == "01")


# Another local user's process: holds ``n`` idle connections to the port, opening a new one
# whenever the server closes one; prints "holding" once all ``n`` were open.
HOLDER = r"""
import asyncio, resource, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, n + 200)), hard))
async def hold(opened):
    while True:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.5)
            continue
        opened.append(1)
        await reader.read()  # until the server closes it
        writer.close()
        await asyncio.sleep(0.5)
async def main():
    opened, tasks = [], []
    for i in range(n):  # a hundred at a time: a burst beyond the listen queue would be lost
        tasks.append(asyncio.create_task(hold(opened)))
        while len(opened) < len(tasks) - 100:
            await asyncio.sleep(0.01)
    while len(opened) < n:
        await asyncio.sleep(0.05)
    print("holding", flush=True)
    await asyncio.gather(*tasks)
asyncio.run(main())
"""


async def test_the_owner_is_served_while_another_user_holds_1000_idle_connections(
        server: ServerProcess, other_user: OtherUser) -> None:
    server.start()
    holder = other_user.popen(HOLDER, str(server.port), "1000", stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    try:
        line = await asyncio.to_thread(holder.stdout.readline)  # type: ignore[union-attr]
        assert line.strip() == "holding", holder.stderr.read() if holder.stderr else ""
        # Until the server has them all (a burst waits in the kernel's queue) or made room.
        await wait_until(lambda: _established(server.port) >= 1000
                         or "closed a connection that sent" in server.log.read_text(), timeout=60)
        codes = [await asyncio.to_thread(_status_code, server) for _ in range(20)]
        assert codes == [200] * 20
        dispatch_id = await asyncio.to_thread(ct.dispatch(two_node, dispatcher_addr=server.addr), 2, 3)
        result = await asyncio.to_thread(ct.get_result, dispatch_id, True, server.addr)
        assert result.result == 10
        assert holder.poll() is None  # still holding its crowd
    finally:
        holder.terminate()  # runuser passes it on
        await asyncio.to_thread(holder.communicate, timeout=20)
    assert "closed a connection that sent no authenticated request" in server.log.read_text()


@ct.lattice
def _gated_big(started, release):
    return big_bytes(gate(19, started, release))


async def test_a_client_that_goes_away_is_one_log_line_not_a_500(
        server: ServerProcess, tmp_path: Path) -> None:
    # Ctrl-C in get_result(wait=True) or mid-upload: before, each was logged as an "unhandled
    # error" with a 40-line traceback, and answered 500 to nobody.
    server.start()
    started, release = tmp_path / "started", tmp_path / "release"
    dispatch_id = await asyncio.to_thread(
        ct.dispatch(_gated_big, dispatcher_addr=server.addr), str(started), str(release))
    await wait_until(started.exists, timeout=30)
    auth = f"Host: {server.addr}\r\nAuthorization: Bearer {server.token}\r\n"
    frame = build_submission(two_node, (1, 2), {}, dispatch_id=str(uuid.uuid4()),
                             disable_run=False)
    _, upload = await asyncio.open_connection("127.0.0.1", server.port)
    upload.write(f"POST /api/v1/dispatches HTTP/1.1\r\n{auth}Content-Type: {wire.CONTENT_TYPE}"
                 f"\r\nContent-Length: {len(frame) + 1000}\r\n\r\n".encode()
                 + frame[:len(frame) // 2])
    _, poll = await asyncio.open_connection("127.0.0.1", server.port)
    poll.write(f"GET /api/v1/dispatches/{dispatch_id}?wait=60 HTTP/1.1\r\n{auth}\r\n".encode())
    await asyncio.gather(upload.drain(), poll.drain())
    # Both are in their handlers once a third request, sent after them, is answered.
    assert await asyncio.to_thread(server.get, f"/dispatches/{dispatch_id}/status") == 200
    for w in (upload, poll):
        w.close()
    release.touch()  # the long poll's 20 MiB answer now goes to a closed connection
    result = await asyncio.to_thread(ct.get_result, dispatch_id, True, server.addr)
    assert result.status == ct.status.COMPLETED and len(result.result) == 20 << 20

    def lines() -> list[str]:
        return [ln for ln in server.log.read_text().splitlines() if "went away" in ln]
    await wait_until(lambda: len(lines()) == 2, timeout=20)
    assert {ln.split(" of ")[1].split()[0] for ln in lines()} == {"POST", "GET"}
    log = server.log.read_text()
    assert "unhandled error" not in log and "Traceback" not in log
