"""Loopback by default, a token for anything else, 401 on every endpoint without it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

import covalent as ct
from dispatcher.app import create_app
from tests.conftest import in_process_settings
from tests.faults.conftest import REPO, ServerProcess
from tests.tasks import add

ENDPOINTS = [("GET", "/health"), ("GET", "/status"), ("GET", "/dispatches"),
             ("POST", "/dispatches"), ("GET", "/dispatches/{id}"), ("GET", "/dispatches/{id}/status"),
             ("GET", "/dispatches/{id}/nodes/0"), ("POST", "/dispatches/{id}/cancel"),
             ("POST", "/dispatches/{id}/start"), ("GET", "/triggers"), ("POST", "/triggers"),
             ("POST", "/triggers/stop")]


def _call(url: str, method: str, token: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    req = urllib.request.Request(url, data=b"{}" if method == "POST" else None, method=method,
                                 headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10"])
def test_non_loopback_bind_without_token_is_refused_at_start(host: str, tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "dispatcher", "--host", host, "--port", "0",
                          "--data-dir", str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                         timeout=60, env={"PATH": "", "PYTHONPATH": str(REPO)})
    assert out.returncode == 2
    assert f"refusing to bind {host}" in out.stderr and "token" in out.stderr


def test_a_dashboard_on_every_interface_needs_a_token(tmp_path: Path) -> None:
    settings = in_process_settings(tmp_path)
    exposed = replace(settings, cluster=replace(settings.cluster, dashboard_address="0.0.0.0:8787"))
    with pytest.raises(ValueError, match="dashboard on 0.0.0.0:8787.*token"):
        create_app(exposed)


async def test_with_a_token_every_endpoint_needs_it(aiohttp_client: Any, tmp_path: Path,
                                                    config_dir: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    settings = in_process_settings(tmp_path / "data")
    secured = replace(settings, token="s3cret-token")
    client = await aiohttp_client(create_app(secured))
    base = f"http://127.0.0.1:{client.port}/api/v1"
    some_id = "8c1fd8b9-4a5e-4a61-9b0c-1f4ad0c2a0a1"
    for method, path in ENDPOINTS:
        url = base + path.format(id=some_id)
        for token in (None, "", "wrong", "s3cret-toke", "s3cret-token-and-more"):
            code, body = await asyncio.to_thread(_call, url, method, token)
            assert code == 401 and body["error"] == "Unauthorized", (method, path, token)
        code, _ = await asyncio.to_thread(_call, url, method, "s3cret-token")
        assert code != 401, (method, path)
    # the SDK sends the token from the environment
    addr = f"127.0.0.1:{client.port}"
    with pytest.raises(ct.errors.UnauthorizedError):
        await asyncio.to_thread(ct.dispatch(_wf, dispatcher_addr=addr), 1)
    monkeypatch.setenv("COVALENT_TOKEN", "s3cret-token")
    dispatch_id = await asyncio.to_thread(ct.dispatch(_wf, dispatcher_addr=addr), 1)
    result = await asyncio.to_thread(ct.get_result, dispatch_id, True, addr)
    assert result.result == 3


@ct.lattice
def _wf(x):
    return add(x, 2)


@pytest.mark.slow
@pytest.mark.processes
def test_embedded_scheduler_and_dashboard_listen_on_loopback(server: ServerProcess) -> None:
    server.start()  # started with --dashboard-address :0, which Dask alone would bind widely
    info = server.status()
    assert info is not None
    assert urlparse(info["cluster"]["scheduler"]).hostname == "127.0.0.1"
    assert urlparse(info["cluster"]["dashboard"]).hostname == "127.0.0.1"
    listening = _listening_addresses(server.proc.pid)
    assert listening and all(h in ("127.0.0.1", "::1") for h, _ in listening), listening


def _listening_addresses(pid: int) -> list[tuple[str, int]]:
    """(host, port) of the TCP sockets the process listens on, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().as_posix()
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = []
    for table, v6 in (("tcp", False), ("tcp6", True)):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            parts = line.split()
            if parts[3] == "0A" and parts[9] in inodes:  # LISTEN
                host_hex, port_hex = parts[1].split(":")
                out.append((_host(host_hex, v6), int(port_hex, 16)))
    return out


def _host(h: str, v6: bool) -> str:
    import ipaddress

    raw = bytes.fromhex(h)
    if not v6:
        return str(ipaddress.IPv4Address(raw[::-1]))
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    addr = ipaddress.IPv6Address(words)
    return str(addr.ipv4_mapped or addr)
