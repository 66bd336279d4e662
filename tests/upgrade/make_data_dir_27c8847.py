"""Make ``tests/upgrade/data-27c8847``: a data dir written by commit 27c8847 of this project.

Run it with that commit's code, never this one's (its store has no schema version, and records
gathered lists, dicts and results as pickles of ``covalent._assembly``, which no longer exists):

    git archive 27c8847 | tar -x -C /tmp/old27
    python3 -m venv /tmp/old27venv && /tmp/old27venv/bin/pip install -e /tmp/old27
    /tmp/old27venv/bin/python tests/upgrade/make_data_dir_27c8847.py tests/upgrade/data-27c8847

It starts that commit's server on the data dir, runs the dispatches below through that commit's
SDK, stops the server, and writes ``expected.json`` beside the data: each dispatch's id, status,
error, result and node outputs as that commit's SDK read them back. ``test_old_data_dir.py``
checks that today's server reads every one of them back the same.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import covalent as ct

LARGE = bytes(range(256)) * 1200  # 307,200 bytes: above that commit's 256 KiB inline limit


@ct.electron
def add(x: int, y: int) -> int:
    return x + y


@ct.electron
def total(xs: list[int]) -> int:
    return sum(xs)


@ct.electron
def split(xs: list[int]) -> tuple[list[int], list[int]]:
    return xs[: len(xs) // 2], xs[len(xs) // 2 :]


@ct.electron
def pair(d: dict[str, int]) -> list[Any]:
    return sorted(d.items())


@ct.electron
def large(n: int) -> bytes:
    return LARGE[:n]


@ct.electron
def fails(x: int) -> int:
    raise ValueError(f"no good: {x}")


@ct.lattice
def quickstart(n: int) -> dict[str, Any]:
    parts = [add(i, 1) for i in range(n)]
    s = add(total(parts), 0)
    a, b = split(parts)
    return {"total": s, "first": parts[0], "halves": [a, b]}


@ct.lattice
def gathered(x: int) -> list[Any]:
    d = {"a": add(x, 1), "b": add(x, 2)}
    return [pair(d), [add(x, 3), add(x, 4)], d]


@ct.lattice
def big(n: int) -> Any:
    return large(n)


@ct.lattice
def half_failed(x: int) -> list[int]:
    return [add(x, 1), fails(x)]


@ct.electron
@ct.lattice
def inner(x: int) -> list[int]:
    return [add(x, 10), add(x, 20)]


@ct.lattice
def outer(x: int) -> Any:
    return inner(add(x, 1))


@ct.lattice
def pending(x: int) -> int:
    return add(x, 100)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the old server exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url + "/api/v1/status", timeout=2).read()
            return
        except OSError:
            time.sleep(0.2)  # another process is starting
    raise SystemExit("the old server did not answer")


def node_outputs(result: Any) -> dict[str, Any]:
    out = {}
    for node in result.get_all_node_results() if hasattr(result, "get_all_node_results") else []:
        out[str(node["node_id"])] = {"name": node["node_name"], "status": str(node["status"]),
                                     "output": encode(node["output"])}
    return out


def encode(value: Any) -> Any:
    """JSON for the values these lattices make (bytes as their length and a digest)."""
    import hashlib

    if isinstance(value, bytes):
        return {"bytes": len(value), "sha256": hashlib.sha256(value).hexdigest()}
    if isinstance(value, tuple):
        return {"tuple": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {"dict": [[encode(k), encode(v)] for k, v in value.items()]}
    return value


def main(target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    data = target / "data"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, COVALENT_CONFIG_DIR=str(target / "config"))
    env.pop("COVALENT_TOKEN", None)
    log = open(target.parent / "make-data-dir.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "dispatcher", "--port", str(port), "--data-dir",
                             str(data), "--workers", "1", "--threads-per-worker", "2",
                             "--dashboard-address", ":0"], env=env, stdout=log, stderr=log,
                            cwd=Path(ct.__file__).parents[1])  # that commit's tree, not this one
    try:
        wait_up(url, proc)
        addr = f"127.0.0.1:{port}"
        runs = [("quickstart", quickstart, (6,)), ("gathered", gathered, (5,)),
                ("big", big, (len(LARGE),)), ("half_failed", half_failed, (1,)),
                ("outer", outer, (2,))]
        expected: dict[str, Any] = {}
        for name, lattice, args in runs:
            dispatch_id = ct.dispatch(lattice, dispatcher_addr=addr)(*args)
            result = ct.get_result(dispatch_id, wait=True, dispatcher_addr=addr)
            expected[name] = {"dispatch_id": dispatch_id, "status": str(result.status),
                              "error": result.error or "", "result": encode(result.result),
                              "nodes": node_outputs(result)}
        pending_id = ct.dispatch(pending, dispatcher_addr=addr, disable_run=True)(1)
        expected["pending"] = {"dispatch_id": pending_id, "status": "NEW_OBJECT"}
        (target / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        log.close()
    shutil.rmtree(target / "config", ignore_errors=True)
    for leftover in ("server.log", "server.pid"):
        (data / leftover).unlink(missing_ok=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
