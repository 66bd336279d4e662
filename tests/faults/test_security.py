"""Nobody but its user gets in: web pages, other local users, the network (issue #10).

Real processes throughout: the requests a web page could send, the token `covalent start`
generates, the embedded Dask cluster's sockets (or TLS), file modes, and where the token must never show.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
import re
import socket
import stat
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import cloudpickle
import pytest
from distributed import Client, Security
from distributed.comm import connect

import covalent as ct
from covalent import wire
from covalent.config import client_config, config_path
from covalent._dispatch import build_submission
from dispatcher.app import create_app
from tests.conftest import fetched, free_port, in_process_settings, wait_until
from tests.faults.conftest import REPO, Cli, ServerProcess
from tests.other_user import OtherUser, other_user  # noqa: F401  (fixture)
from tests.tasks import LoaderRecorder, add, noise, touch

ENDPOINTS = [("GET", "/health"), ("GET", "/status"), ("GET", "/dispatches"),
             ("POST", "/dispatches"), ("GET", "/dispatches/{id}"), ("GET", "/dispatches/{id}/status"),
             ("GET", "/dispatches/{id}/nodes/0"), ("POST", "/dispatches/{id}/cancel"),
             ("POST", "/dispatches/{id}/start"), ("GET", "/triggers"), ("POST", "/triggers"),
             ("POST", "/triggers/stop")]


def _request(url: str, method: str = "GET", body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _call(url: str, method: str, token: str | None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return _request(url, method, b"{}" if method == "POST" else None, headers)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10"])
def test_non_loopback_bind_without_token_is_refused_at_start(host: str, tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "dispatcher", "--host", host, "--port", "0",
                          "--data-dir", str(tmp_path), "--no-token"], cwd=REPO, capture_output=True,
                         text=True, timeout=60, env={"PATH": "", "PYTHONPATH": str(REPO)})
    assert out.returncode == 2
    assert f"refusing to bind {host}" in out.stderr and "token" in out.stderr


def test_a_dashboard_on_every_interface_needs_a_token(tmp_path: Path) -> None:
    settings = in_process_settings(tmp_path)
    exposed = replace(settings, cluster=replace(settings.cluster, dashboard_address="0.0.0.0:8787"))
    with pytest.raises(ValueError, match="dashboard on 0.0.0.0:8787.*token"):
        create_app(exposed)


async def test_with_a_token_every_endpoint_needs_it(config_dir: Path, aiohttp_client: Any,
                                                    tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    settings = in_process_settings(tmp_path / "data")
    secured = replace(settings, token="s3cret-token")
    client = await aiohttp_client(create_app(secured))
    base = f"http://127.0.0.1:{client.port}/api/v1"
    some_id = "8c1fd8b9-4a5e-4a61-9b0c-1f4ad0c2a0a1"
    for method, path in ENDPOINTS:
        url = base + path.format(id=some_id)
        for token in (None, "", "wrong", "s3cret-toke", "s3cret-token-and-more", "s3cret-tökén"):
            code, body = await asyncio.to_thread(_call, url, method, token)
            assert code == 401 and body["error"] == "Unauthorized", (method, path, token)
        code, _ = await asyncio.to_thread(_call, url, method, "s3cret-token")
        assert code != 401, (method, path)
    raw_bytes = await asyncio.to_thread(_raw_authorization, client.port, b"Bearer \xff\xfe\x80")
    assert raw_bytes == 401  # undecodable bytes: a 401, never a 500
    # the SDK sends the token from the environment
    addr = f"127.0.0.1:{client.port}"
    with pytest.raises(ct.errors.UnauthorizedError):
        await asyncio.to_thread(ct.dispatch(_wf, dispatcher_addr=addr), 1)
    monkeypatch.setenv("COVALENT_TOKEN", "s3cret-token")
    dispatch_id = await asyncio.to_thread(ct.dispatch(_wf, dispatcher_addr=addr), 1)
    result = await fetched(dispatch_id, addr)
    assert result.result == 3


def _raw_authorization(port: int, value: bytes) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest("GET", "/api/v1/status")
    conn.putheader("Authorization", value)
    conn.endheaders()
    status = conn.getresponse().status
    conn.close()
    return status


@ct.lattice
def _wf(x):
    return add(x, 2)


@ct.lattice
def _touching(path):
    return touch(path)


@pytest.mark.slow
@pytest.mark.processes
def test_cross_site_requests_create_nothing_and_run_nothing(tmp_path: Path,
                                                            server_env: dict[str, str]) -> None:
    # The worst case: a server started with --no-token, so only the request checks stand.
    server = ServerProcess(tmp_path / "data", server_env, workers=1, extra=["--no-token"])
    server.start()
    try:
        api = server.url + "/api/v1"
        marker = tmp_path / "ran.txt"
        frame = build_submission(_touching, (str(marker),), {}, dispatch_id=str(uuid.uuid4()),
                                 disable_run=False)
        simple_types = ["text/plain", "application/x-www-form-urlencoded",
                        "multipart/form-data; boundary=x"]
        for ctype in simple_types:  # what a page can send without a CORS preflight
            code, body = _request(api + "/dispatches", "POST", frame, {"Content-Type": ctype})
            assert (code, body["error"]) == (415, "UnsupportedMediaType"), ctype
        code, body = _request(api + "/dispatches", "POST", frame,
                              {"Content-Type": wire.CONTENT_TYPE, "Origin": "https://evil.example"})
        assert (code, body["error"]) == (403, "Forbidden")
        for path in ("/dispatches", "/status", "/health"):  # DNS rebinding: a foreign Host
            code, body = _request(api + path, headers={"Host": f"evil.example:{server.port}"})
            assert (code, body["error"]) == (403, "Forbidden"), path
        loaded = tmp_path / "loaded-by.txt"
        dispatch_id = ct.dispatch(_wf, dispatcher_addr=server.addr, disable_run=True)(1)
        crafted = json.dumps({"trigger": {"name": "x", "lattice_dispatch_id": dispatch_id},
                              "pickled": base64.b64encode(cloudpickle.dumps(
                                  LoaderRecorder(str(loaded)))).decode()}).encode()
        code, _ = _request(api + "/triggers", "POST", crafted, {"Content-Type": "text/plain"})
        assert code == 415
        code, listing = _request(api + "/dispatches")
        assert [d["dispatch_id"] for d in listing["dispatches"]] == [dispatch_id]  # only ours
        assert not marker.exists() and not loaded.exists()

        # The same requests, sent as the SDK sends them, work: the checks are what refused.
        code, _ = _request(api + "/dispatches", "POST", frame, {"Content-Type": wire.CONTENT_TYPE})
        assert code == 201
        code, _ = _request(api + "/triggers", "POST", crafted, {"Content-Type": "application/json"})
        assert code == 201
        assert int(loaded.read_text()) != server.proc.pid  # unpickled in the trigger's own process
        asyncio.run(wait_until(marker.exists, timeout=30))
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.processes
def test_covalent_start_requires_a_token_and_keeps_it_private(cli: Cli, config_dir: Path) -> None:
    port = free_port()
    out = cli("start", "--port", str(port), "--workers", "1")
    assert out.returncode == 0, out.stdout + out.stderr
    pid = cli.server_pid()
    token = client_config().token
    # Never printed: the link that lets a browser in carries a ticket the server made.
    assert len(token) >= 32 and token not in out.stdout + out.stderr
    assert re.search(rf"Web UI: http://127\.0\.0\.1:{port}/\?ticket=[\w-]{{40,}}\n", out.stdout)
    url = f"http://127.0.0.1:{port}/api/v1"
    assert _request(url + "/status")[0] == 401  # no token: refused, by default
    assert _raw_authorization(port, b"Bearer \xc3\x28 odd") == 401

    dispatch_id = ct.dispatch(_big)(300)  # the SDK reads the token from the config file
    assert ct.get_result(dispatch_id, wait=True).status == "COMPLETED"

    data = cli.data_dir
    blobs = list((data / "blobs").rglob("*"))  # the output, written by the worker
    assert [b for b in blobs if b.is_file() and b.stat().st_size >= 300 << 10]
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in [
        config_path(), config_path().parent, data, data / "server.log", *blobs,
        *([] if os.environ.get("COVALENT_DB_URL") else [data / "dispatches.db"])]}
    assert modes[config_path()] == 0o600 and modes[config_path().parent] == 0o700
    assert modes[data] == 0o700
    loose = {str(p): oct(m) for p, m in modes.items() if m & 0o077}
    assert not loose, loose

    status = _request(url + "/status", headers={"Authorization": f"Bearer {token}"})[1]
    assert token not in json.dumps(status)
    assert token not in (data / "server.log").read_text()
    for p in [pid, *cli.started]:  # the server and its workers: nothing in `ps`
        cmdline = Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")
        assert token not in cmdline, p

    # The embedded cluster talks over Unix sockets in a directory only its user may enter;
    # its user connects a plain Dask client (tests below: another user cannot).
    scheduler = status["cluster"]["scheduler"]
    assert scheduler.startswith("unix:///")
    sock = Path(scheduler.removeprefix("unix://"))
    assert stat.S_ISSOCK(sock.stat().st_mode) and stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
    with Client(scheduler, timeout=10) as client:
        workers = list(client.scheduler_info()["workers"])
        assert len(workers) == 1 and workers[0].startswith(f"unix://{sock.parent}/")
        # its scratch space (spilled data) in the data dir, not /tmp/dask-scratch-space, a
        # name another user may take first and own
        spaces = client.run(lambda dask_worker: dask_worker.local_directory)
        assert [Path(d).is_relative_to(data) for d in spaces.values()] == [True], spaces
    cli.stop_server()
    assert not sock.parent.exists()  # its sockets go with it


_CONNECT = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as exc:
    print(type(exc).__name__)
else:
    print("connected")
"""


def _started_scheduler(cli: Cli, workers: int) -> str:
    """``covalent start``; the address of its embedded scheduler, as ``/status`` gives it."""
    port = free_port()
    out = cli("start", "--port", str(port), "--workers", str(workers))
    assert out.returncode == 0, out.stdout + out.stderr
    url = f"http://127.0.0.1:{port}/api/v1/status"
    status = _request(url, headers={"Authorization": f"Bearer {client_config().token}"})[1]
    return str(status["cluster"]["scheduler"])


def test_another_user_cannot_reach_the_embedded_cluster(cli: Cli, other_user: OtherUser) -> None:
    """The scheduler's and every worker's socket: refused to another local user, at the
    directory (0700), whatever the socket's own mode."""
    scheduler = _started_scheduler(cli, workers=2)
    with Client(scheduler, timeout=10) as client:
        addresses = [scheduler, *client.scheduler_info()["workers"]]
    assert len(addresses) == 3
    for address in addresses:
        path = address.removeprefix("unix://")
        seen = other_user.python(_CONNECT, path)
        assert seen.stdout.strip() == "PermissionError", (address, seen.stdout, seen.stderr)
        os.chmod(path, 0o777)  # even so: the directory keeps them out
        assert other_user.python(_CONNECT, path).stdout.strip() == "PermissionError"


async def _connect(address: str) -> None:
    """What a plain Dask client does first: connect, and exchange Dask's handshake."""
    comm = await connect(address, timeout=3)
    await comm.close()


def test_the_embedded_cluster_on_tls_refuses_a_client_without_its_credentials(cli: Cli) -> None:
    """``COVALENT_CLUSTER_COMM=tls``: TCP with credentials made fresh at each start."""
    cli.env["COVALENT_CLUSTER_COMM"] = "tls"
    scheduler = _started_scheduler(cli, workers=1)
    assert scheduler.startswith("tls://127.0.0.1:")
    for address in (scheduler, scheduler.replace("tls://", "tcp://")):
        with pytest.raises((OSError, TimeoutError, TypeError)):  # TypeError: no TLS context
            asyncio.run(_connect(address))
    tls = cli.data_dir / "tls"
    assert stat.S_IMODE(tls.stat().st_mode) == 0o700
    own = Security(tls_ca_file=str(tls / "ca.pem"), tls_client_cert=str(tls / "cert.pem"),
                   tls_client_key=str(tls / "key.pem"), require_encryption=True)
    with Client(scheduler, security=own, timeout=10) as client:
        assert len(client.scheduler_info()["workers"]) == 1
    dispatch_id = ct.dispatch(_big)(300)  # workers that store, on TLS
    assert len(ct.get_result(dispatch_id, wait=True).result) == 300 << 10


@ct.lattice
def _big(kib):
    return noise(kib)  # over the inline limit: stored as a blob file


# A web server another user runs: prints each request it gets (path, Authorization) as JSON.
_SQUATTER = r"""
import http.server, json, socket, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def answer(self):
        print(json.dumps({"method": self.command, "path": self.path,
                          "authorization": self.headers.get("Authorization", "")}), flush=True)
        body = b'{"error": "DispatchNotFound", "message": "dispatch not found"}'
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = answer
    def log_message(self, *args):
        pass
class DualStack(http.server.HTTPServer):  # one IPv6 socket on "::" that takes IPv4 too
    address_family = socket.AF_INET6
    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()
server = (DualStack(("::", 0), Handler) if sys.argv[1:] == ["dual-stack"]
          else http.server.HTTPServer(("127.0.0.1", 0), Handler))
print(json.dumps({"port": server.server_address[1]}), flush=True)
server.serve_forever()
"""


def test_covalent_start_sends_nothing_to_another_users_process_at_its_port(
        other_user: OtherUser, cli: Cli) -> None:
    """`covalent start` probed its port with the saved token until its own server answered:
    another user's process there was sent it (16 times), and the failure did not say whose
    process held the port."""
    squatter = other_user.popen(_SQUATTER, "dual-stack", stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
    try:
        port = json.loads(squatter.stdout.readline())["port"]  # type: ignore[union-attr]
        out = cli("start", "--port", str(port), "--workers", "1")
    finally:
        squatter.terminate()
        seen, _ = squatter.communicate(timeout=20)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "in use" in out.stderr and f"user {other_user.name}'s process listens there" in out.stderr
    assert seen.strip() == ""  # not one request


@pytest.mark.parametrize("listening", ["ipv4", "dual-stack"])
def test_another_user_listening_at_the_dispatchers_address_is_sent_nothing(
        other_user: OtherUser, monkeypatch: pytest.MonkeyPatch, listening: str) -> None:
    """While your dispatcher is stopped, another user of the machine listens at its address:
    the SDK used to send them your token and workflow, and unpickle what they answered (code
    run as you). It now sends nothing to another user's process, and says whose it is. A
    dual-stack listener (IPv6 on ``::``, taking IPv4) was sent everything: the kernel lists
    its sockets in ``/proc/net/tcp6``, where the owner was not looked for."""
    monkeypatch.setenv("COVALENT_TOKEN", "the-token-only-you-have")
    monkeypatch.delenv("COVALENT_SERVER_USER", raising=False)
    squatter = other_user.popen(_SQUATTER, listening, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
    try:
        port = json.loads(squatter.stdout.readline())["port"]  # type: ignore[union-attr]
        addr = f"127.0.0.1:{port}"
        some_id = str(uuid.uuid4())
        with pytest.raises(ct.errors.ServerNotYoursError, match=f"belongs to user {other_user.name}"):
            ct.dispatch(ct.lattice(add), dispatcher_addr=addr)(1, 2)
        with pytest.raises(ct.errors.ServerNotYoursError) as caught:
            ct.get_result(some_id, wait=True, dispatcher_addr=addr)  # not waited on: refused
        assert "COVALENT_SERVER_USER" in str(caught.value)
        # a dispatcher another user runs for you, named: talked to
        monkeypatch.setenv("COVALENT_SERVER_USER", other_user.name)
        with pytest.raises(ct.errors.DispatchNotFoundError):
            ct.get_result(some_id, dispatcher_addr=addr)
    finally:
        squatter.terminate()  # runuser passes it on
        out, _ = squatter.communicate(timeout=20)
    seen = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert [(r["method"], r["path"].split("?")[0]) for r in seen] == [
        ("GET", f"/api/v1/dispatches/{some_id}")], seen  # only the request made once named


def test_a_loopback_listener_the_kernel_does_not_name_is_sent_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Whose a loopback socket is went unchecked when the kernel's tables did not list it (the
    dual-stack case above, before it was looked for): now nothing is sent to it."""
    from covalent import _peers

    def listed_but_theirs(server_end, client_end, family):  # as a server in another netns
        return None if client_end[1] == port else _peers.socket_owner(server_end, client_end,
                                                                       family)

    monkeypatch.setattr("covalent._client.socket_owner", listed_but_theirs)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        addr = f"127.0.0.1:{port}"
        with pytest.raises(ct.errors.ServerNotYoursError, match="does not say whose it is"):
            ct.get_result(str(uuid.uuid4()), dispatcher_addr=addr)
        listener.settimeout(0.1)
        accepted, _ = listener.accept()  # the connection the check was made on
        with accepted:
            accepted.settimeout(2)
            assert accepted.recv(1024) == b""  # closed, and nothing was written to it
    # A kernel that lists neither end (WSL 1, no /proc): as on another machine, talked to.
    monkeypatch.setattr("covalent._client.socket_owner", lambda *args: None)
    answering = subprocess.Popen([sys.executable, "-c", _SQUATTER, "ipv4"],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = json.loads(answering.stdout.readline())["port"]  # type: ignore[union-attr]
        with pytest.raises(ct.errors.DispatchNotFoundError):
            ct.get_result(str(uuid.uuid4()), dispatcher_addr=f"127.0.0.1:{port}")
    finally:
        answering.kill()
        answering.communicate(timeout=10)


@ct.electron
def _write_and_stat(path):
    with open(path, "w") as fh:
        fh.write("result")
    return stat.S_IMODE(os.stat(path).st_mode), f"{os.umask(0o022):o}"


@ct.lattice
def _writes(path):
    return _write_and_stat(path)


def test_what_a_node_writes_has_the_users_umask_and_the_store_stays_private(
        server: ServerProcess, tmp_path: Path) -> None:
    # Every file an electron wrote was 0600 (the dispatcher's umask 077, inherited), unreadable
    # to the group a lab shares results with; plain Dask and Covalent honour the user's umask.
    server.start(preexec=lambda: os.umask(0o002))
    out = tmp_path / "shared" / "result.txt"
    out.parent.mkdir()
    dispatch_id = ct.dispatch(_writes, dispatcher_addr=server.addr)(str(out))
    result = ct.get_result(dispatch_id, wait=True, dispatcher_addr=server.addr)
    assert (result.status, result.result) == ("COMPLETED", (0o664, "2"))
    private = [p for p in server.data_dir.rglob("*") if not p.is_symlink()
               and stat.S_IMODE(p.stat().st_mode) & 0o077 and not p.is_socket()]
    assert private == [] and stat.S_IMODE(server.data_dir.stat().st_mode) == 0o700
