"""Task dependencies that run on the worker around an electron: DepsBash, DepsPip, DepsCall.

Each class keeps what it needs to run later; ``run()`` is called on the worker just before
(or, for ``call_after``, just after) the electron's function.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any


class Deps:
    """Base class of every dependency."""

    def run(self) -> Any:
        raise NotImplementedError


class DepsBash(Deps):
    """Shell commands run (in order, with bash) before the electron.

    A command that exits non-zero fails the node with its output in the error.
    """

    def __init__(self, commands: str | Sequence[str] = ()) -> None:
        self.commands = [commands] if isinstance(commands, str) else list(commands)

    def run(self) -> tuple[str, str]:
        out, err = [], []
        for cmd in self.commands:
            proc = subprocess.run(
                ["bash", "-c", cmd], capture_output=True, text=True, check=False
            )
            out.append(proc.stdout)
            err.append(proc.stderr)
            if proc.returncode != 0:
                raise RuntimeError(
                    f"deps_bash command {cmd!r} exited with {proc.returncode}: {proc.stderr.strip()}"
                )
        return "".join(out), "".join(err)

    def __repr__(self) -> str:
        return f"DepsBash({self.commands!r})"


class DepsPip(Deps):
    """Python packages pip-installs on the worker before the electron runs."""

    def __init__(self, packages: str | Sequence[str] = (), reqs_path: str = "") -> None:
        self.packages = [packages] if isinstance(packages, str) else list(packages)
        self.reqs_path = reqs_path
        if reqs_path:
            with open(reqs_path, encoding="utf-8") as fh:
                self.packages += [
                    ln.strip() for ln in fh if ln.strip() and not ln.startswith("#")
                ]

    def run(self) -> tuple[str, str]:
        if not self.packages:
            return "", ""
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", *self.packages],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"deps_pip install of {self.packages} failed: {proc.stderr.strip()}"
            )
        return proc.stdout, proc.stderr

    def __repr__(self) -> str:
        return f"DepsPip({self.packages!r})"


class DepsCall(Deps):
    """A Python call made before or after the electron.

    With ``retval_keyword`` set (``call_before`` only), the call's return value is passed to the
    electron as that keyword argument.
    """

    def __init__(
        self,
        func: Callable[..., Any],
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        retval_keyword: str = "",
        override_reserved_retval_keys: bool = False,
    ) -> None:
        if not callable(func):
            raise TypeError(f"DepsCall needs a callable, got {type(func).__name__}")
        self.func = func
        self.args = list(args)
        self.kwargs = dict(kwargs or {})
        self.retval_keyword = retval_keyword
        self.override_reserved_retval_keys = override_reserved_retval_keys

    def run(self) -> Any:
        return self.func(*self.args, **self.kwargs)

    def __repr__(self) -> str:
        name = getattr(self.func, "__name__", repr(self.func))
        return f"DepsCall({name}, retval_keyword={self.retval_keyword!r})"
