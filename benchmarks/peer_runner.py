"""Run workloads on a real Covalent, one per request: the child side of ``peer.py``.

    PEER_PYTHON -I benchmarks/peer_runner.py ADDR QUICK

Runs under the peer's python in isolated mode (``-I``), so ``import covalent`` is the real
Covalent installed there, never this repository's. It loads ``workloads.py`` by file path as
``benchmark_workloads`` and registers it with cloudpickle by value, since Covalent's workers
cannot import it. Then, for each workload name read as a line on stdin, it dispatches it,
waits with ``ct.get_result(wait=True)`` and answers one JSON line: ``{"status", "error",
"result"}`` with the result pickled and base64-encoded. It exits when stdin closes.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import pickle
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import cloudpickle
import covalent as ct


def load_workloads() -> ModuleType:
    path = Path(__file__).with_name("workloads.py")
    spec = importlib.util.spec_from_file_location("benchmark_workloads", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    cloudpickle.register_pickle_by_value(module)
    return module


def run(w: Any, addr: str) -> dict[str, Any]:
    dispatch_id = ct.dispatch(w.lattice, dispatcher_addr=addr)(*w.args)
    result: Any = ct.get_result(dispatch_id, wait=True, dispatcher_addr=addr)  # Covalent's
    status = str(result.status)
    value = result.result if status == "COMPLETED" else None
    return {"status": status, "error": None if status == "COMPLETED" else str(result.error),
            "result": base64.b64encode(pickle.dumps(value)).decode()}


def main(addr: str, quick: bool) -> None:
    wl = load_workloads()
    known = {w.name: w for w in [*wl.all_workloads(quick), wl.small_workflow()]}
    for line in sys.stdin:
        name = line.strip()
        if name:
            print(json.dumps(run(known[name], addr)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] == "1")
