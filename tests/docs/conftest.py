"""The docs, examples and notebook tests: the session's shared dispatcher (``shared_server`` in
tests/conftest.py), and one Jupyter kernel shared by the notebooks (a second each saved)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.faults.conftest import REPO, Shared

__all__ = ["EXAMPLES", "Shared"]

EXAMPLES = REPO / "examples"


@pytest.fixture
def shared(shared_server: Shared, monkeypatch: pytest.MonkeyPatch) -> Shared:
    """The shared server, and this process's SDK pointed at it for the test."""
    for key in ("COVALENT_CONFIG_DIR", "COVALENT_DISPATCHER_ADDR", "COVALENT_TOKEN"):
        monkeypatch.setenv(key, shared_server.env[key])
    return shared_server


class Kernel:
    """A Jupyter kernel (started in ``examples/``) that runs notebooks one after another."""

    def __init__(self, env: dict[str, str]) -> None:
        from nbclient import NotebookClient
        from nbformat.v4 import new_notebook

        self.client = NotebookClient(new_notebook(), timeout=60, kernel_name="python3",
                                     allow_errors=False)
        self.client.km = self.client.create_kernel_manager()
        self.client.start_new_kernel(cwd=str(EXAMPLES), env=env)
        self.client.start_new_kernel_client()

    def run(self, nb: Any) -> Any:
        """Execute every cell of ``nb`` in a fresh namespace; returns ``nb`` with outputs.

        Raises nbclient's CellExecutionError for a cell that raises."""
        from nbformat.v4 import new_code_cell, new_notebook

        self.client.nb = new_notebook(cells=[new_code_cell("%reset -f")])
        self.client.execute_cell(self.client.nb.cells[0], 0)
        self.client.nb = nb
        self.client.reset_execution_trackers()
        for index, cell in enumerate(nb.cells):
            self.client.execute_cell(cell, index)
        return nb

    def close(self) -> None:
        from jupyter_core.utils import run_sync

        self.client.kc.stop_channels()
        run_sync(self.client.km.shutdown_kernel)(now=True)


@pytest.fixture(scope="session")
def kernel(shared_server: Shared, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    # the notebooks' temporary files and folders stay in pytest's tmp, not the machine's /tmp
    k = Kernel(dict(shared_server.env, TMPDIR=str(tmp_path_factory.mktemp("kernel-tmp"))))
    try:
        yield k
    finally:
        k.close()
