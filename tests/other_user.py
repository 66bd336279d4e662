"""A second local user of this machine, for the cases about other users (issue #21).

``other_user`` creates a system user with no home and no login shell (the tests run as root),
and removes it at teardown. ``OtherUser.python`` runs the system Python (standard library
only) as that user with ``runuser``: what another person logged in to the same machine can do.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

PYTHON = "/usr/bin/python3"
RUNUSER = shutil.which("runuser") or "/usr/sbin/runuser"


@dataclass(frozen=True, slots=True)
class OtherUser:
    name: str
    uid: int

    def command(self, code: str, *args: str) -> list[str]:
        return [RUNUSER, "-u", self.name, "--", PYTHON, "-I", "-c", code, *args]

    def python(self, code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``code`` as this user; its output as text."""
        return subprocess.run(self.command(code, *args), capture_output=True, text=True,
                              timeout=timeout, check=False, env=_ENV, cwd="/")

    def popen(self, code: str, *args: str, **kwargs: Any) -> subprocess.Popen[str]:
        """Start ``code`` as this user (the caller stops it, by its PID)."""
        return subprocess.Popen(self.command(code, *args), text=True, env=_ENV, cwd="/", **kwargs)


_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}


@pytest.fixture
def other_user() -> Iterator[OtherUser]:
    if os.geteuid() != 0 or not shutil.which("useradd") or not os.path.exists(RUNUSER) \
            or not os.path.exists(PYTHON):
        pytest.skip("needs root, useradd, runuser and /usr/bin/python3 to act as a second user")
    name = f"cvt{secrets.token_hex(4)}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    name], check=True, capture_output=True)
    try:
        yield OtherUser(name, pwd.getpwnam(name).pw_uid)
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)
