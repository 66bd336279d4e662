"""Install a named executor's pip packages on a worker before the first of its nodes runs there.

``[executors.gpu] pip = ["torch==2.3"]`` puts the packages in the spec of every node of that
executor; the first such node on a worker process runs ``pip install`` (one at a time per
process), later ones find them installed. A failed install fails the node with pip's message
and is tried again by the next node (the network may be back).
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import threading

from covalent.wire import clean_text


class PackageInstallError(RuntimeError):
    """pip could not install a named executor's packages on this worker."""


class Packages:
    """The package sets installed in this worker process (worker-process state)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.installed: set[tuple[str, ...]] = set()

    def ensure(self, executor: str, packages: tuple[str, ...]) -> None:
        """pip-install ``packages`` unless this process did already; raise on failure."""
        if not packages or packages in self.installed:
            return
        with self.lock:
            if packages in self.installed:
                return
            proc = subprocess.run(
                [sys.executable, "-m", "pip", "install", "--quiet", "--no-input",
                 "--disable-pip-version-check", *packages],
                stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise PackageInstallError(
                    f"pip install {' '.join(packages)} (the packages of executor {executor!r}) "
                    f"failed on this worker with exit code {proc.returncode}: "
                    + clean_text(proc.stderr.strip() or proc.stdout.strip(), 4000))
            importlib.invalidate_caches()  # new modules are found by the next import
            self.installed.add(packages)


packages = Packages()
