"""What a worker reports cannot make the server read, serve or delete a file (issue #21).

User code runs on the workers, so it can log an outcome event of its own (``tests/hostile``).
The server takes nothing from it but a content address, and finds the blob by that address
under its own store: a report naming a canary file gets that file neither served nor deleted,
and a reference that is not an address fails its node with the reason. Real processes: a
``python -m dispatcher`` with two worker processes.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import covalent as ct
from tests.faults.conftest import ServerProcess
from tests.hostile import forging

pytestmark = [pytest.mark.slow, pytest.mark.processes, pytest.mark.all_stores]


def _call(server: ServerProcess, method: str, path: str) -> tuple[int, bytes]:
    req = urllib.request.Request(server.url + "/api/v1" + path, method=method,
                                 headers={"Authorization": f"Bearer {server.token}",
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _node(server: ServerProcess, dispatch_id: str, node_id: int) -> dict[str, Any]:
    code, body = _call(server, "GET", f"/dispatches/{dispatch_id}/nodes/{node_id}")
    assert code == 200, body
    return dict(json.loads(body))


def test_a_forged_output_report_never_reads_nor_deletes_the_file_it_names(
        server: ServerProcess, tmp_path: Path) -> None:
    server.start()
    canary = tmp_path / "canary.txt"
    secret = b"the canary's secret, never to be served\n"
    canary.write_bytes(secret)
    address = hashlib.sha256(secret).hexdigest()  # a well-formed address: only its place lies

    # 1. A real address, with the canary as its "location": the place comes from the address,
    # so deleting the dispatch leaves the canary be, and reading the output never serves it.
    for _ in ("delete", "read"):
        named = ct.dispatch(forging, dispatcher_addr=server.addr)(address, len(secret), str(canary))
        done = ct.get_result(named, wait=True, dispatcher_addr=server.addr, status_only=True)
        assert done["status"] == "COMPLETED"
        if _ == "delete":
            assert _call(server, "DELETE", f"/dispatches/{named}")[0] == 200
            assert canary.read_bytes() == secret
    code, body = _call(server, "GET", f"/dispatches/{named}/nodes/0/output")
    assert secret not in body
    assert (code, json.loads(body)["error"]) == (410, "StoredDataLost")

    # 2. A path where the address should be: refused, the node FAILED with the reason.
    for ref in [str(canary), "../" * 12 + str(canary).lstrip("/"), address + "\n",
                "b3-" + "../" * 12 + str(canary).lstrip("/"), "b3-/" + address[1:]]:
        pathlike = ct.dispatch(forging, dispatcher_addr=server.addr)(ref, len(secret), str(canary))
        result = ct.get_result(pathlike, wait=True, dispatcher_addr=server.addr)
        assert result.status == "FAILED", ref
        node = _node(server, pathlike, 0)
        assert node["status"] == "FAILED" and "is not a blob address" in node["error"], node
        assert "is not a blob address" in result.error
        code, body = _call(server, "GET", f"/dispatches/{pathlike}/nodes/0/output")
        assert code == 404 and secret not in body

    # Retention's bulk delete removes only what the store owns.
    code, _ = _call(server, "DELETE", "/dispatches?all=1")
    assert code == 200 and canary.read_bytes() == secret
