"""Task dependencies that run on the worker around an electron: DepsBash, DepsPip, DepsCall.

Each class keeps what it needs to run later; ``run()`` is called on the worker just before
(or, in ``call_after``, just after) the electron's function, and returns the value that a
``retval_keyword`` injects. Any dependency may go anywhere Covalent takes one: ``deps_bash``,
``deps_pip``, ``call_before`` or ``call_after``.

``call_with_hooks`` is what the worker runs for an electron: bash deps, pip deps and
``call_before`` in that order, the function with the injected keywords, then ``call_after``.
Several ``call_before`` dependencies with the same ``retval_keyword`` inject the list of their
values in call order; a single one injects its value, except for the keyword reserved for file
transfers (``files``), which always receives a list.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from .errors import ReservedRetvalKeywordError

RESERVED_RETVAL_KEY__FILES = "files"
RESERVED_RETVAL_KEYS = frozenset({RESERVED_RETVAL_KEY__FILES})


class Deps:
    """Base class of every dependency; ``retval_keyword`` names the argument its value feeds."""

    retval_keyword: str = ""

    def run(self) -> Any:
        raise NotImplementedError


class DepsBash(Deps):
    """Shell commands run (in order, with bash) on the worker.

    Their output goes to the node's stdout and stderr. A command that exits non-zero fails
    the node with its stderr in the error.
    """

    def __init__(self, commands: str | Sequence[str] = ()) -> None:
        self.commands = [commands] if isinstance(commands, str) else list(commands)

    def run(self) -> None:
        for cmd in self.commands:
            proc = subprocess.run(["bash", "-c", cmd], stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, check=False)
            sys.stdout.write(proc.stdout)
            sys.stderr.write(proc.stderr)
            if proc.returncode != 0:
                raise RuntimeError(
                    f"deps_bash command {cmd!r} exited with {proc.returncode}: {proc.stderr.strip()}"
                )

    def __repr__(self) -> str:
        return f"DepsBash({self.commands!r})"


class DepsPip(Deps):
    """Python packages pip-installs on the worker (from ``packages`` and/or a requirements file)."""

    def __init__(self, packages: str | Sequence[str] = (), reqs_path: str = "") -> None:
        self.packages = [packages] if isinstance(packages, str) else list(packages)
        self.reqs_path = reqs_path
        if reqs_path:
            with open(reqs_path, encoding="utf-8") as fh:
                self.packages += [
                    ln.strip() for ln in fh if ln.strip() and not ln.startswith("#")
                ]

    def run(self) -> None:
        if not self.packages:
            return
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-input", *self.packages],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False,
        )
        sys.stdout.write(proc.stdout)
        sys.stderr.write(proc.stderr)
        if proc.returncode != 0:
            raise RuntimeError(
                f"deps_pip install of {self.packages} failed: {proc.stderr.strip()}"
            )

    def __repr__(self) -> str:
        return f"DepsPip({self.packages!r})"


class DepsCall(Deps):
    """A Python call made on the worker before or after the electron.

    With ``retval_keyword`` set (``call_before`` only), the call's return value is passed to the
    electron as that keyword argument. ``files`` is reserved for file transfers.

    Raises:
        TypeError: ``func`` is not callable.
        ReservedRetvalKeywordError: ``retval_keyword`` is reserved and
            ``override_reserved_retval_keys`` is not set.
    """

    def __init__(
        self,
        func: Callable[..., Any],
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        *,
        retval_keyword: str = "",
        override_reserved_retval_keys: bool = False,
    ) -> None:
        if not callable(func):
            raise TypeError(f"DepsCall needs a callable, got {type(func).__name__}")
        if retval_keyword in RESERVED_RETVAL_KEYS and not override_reserved_retval_keys:
            raise ReservedRetvalKeywordError(retval_keyword)
        self.func = func
        self.args = list(args or ())
        self.kwargs = dict(kwargs or {})
        self.retval_keyword = retval_keyword or ""
        self.override_reserved_retval_keys = override_reserved_retval_keys

    def run(self) -> Any:
        return self.func(*self.args, **self.kwargs)

    def __repr__(self) -> str:
        name = getattr(self.func, "__name__", repr(self.func))
        return f"DepsCall({name}, retval_keyword={self.retval_keyword!r})"


def _nothing() -> None:
    """What a ``DepsModule`` runs on the worker: its module came with the function."""


class DepsModule(DepsCall):
    """A Python module the electron's code needs where it runs: the electron's function, hooks
    and executor are pickled with everything of that module *by value*, so a worker that cannot
    import the module (a file beside your script) still runs them. As in Covalent, a
    ``DepsCall`` subclass that goes in ``call_before`` (or ``@ct.electron(deps_module=...)``).

    Args:
        module: a module, or its name (imported here, on the client).

    Raises:
        ImportError: the named module cannot be imported.
        TypeError: ``module`` is neither a module nor a name.
    """

    def __init__(self, module: str | ModuleType) -> None:
        if isinstance(module, str):
            module = importlib.import_module(module)
        if not isinstance(module, ModuleType):
            raise TypeError(f"DepsModule needs a module or its name, got {type(module).__name__}")
        self.module_name = module.__name__
        super().__init__(_nothing)

    @property
    def module(self) -> ModuleType | None:
        """The module, where it is imported (on the client that built the graph)."""
        return sys.modules.get(self.module_name)

    def short_name(self) -> str:
        return "depsmodule"

    def __repr__(self) -> str:
        return f"DepsModule({self.module_name!r})"


def as_deps_modules(v: DepsModule | ModuleType | str | Sequence[Any] | None) -> list[Deps]:
    """Normalise a ``deps_module=`` argument to a list of ``DepsModule``."""
    items: list[Any] = [] if v is None else list(v) if isinstance(v, list | tuple) else [v]
    return [d if isinstance(d, DepsModule) else DepsModule(d) for d in items]


def as_deps_bash(v: DepsBash | Sequence[str] | str | None) -> DepsBash | None:
    """Normalise a ``deps_bash=`` argument."""
    if v is None or isinstance(v, DepsBash):
        return v
    if isinstance(v, str | list | tuple):
        return DepsBash(v) if v else None
    raise TypeError(f"deps_bash must be a DepsBash, a command or a list of commands, got {type(v).__name__}")


def as_deps_pip(v: DepsPip | Sequence[str] | str | None) -> DepsPip | None:
    """Normalise a ``deps_pip=`` argument."""
    if v is None or isinstance(v, DepsPip):
        return v
    if isinstance(v, str | list | tuple):
        return DepsPip(packages=v) if v else None
    raise TypeError(f"deps_pip must be a DepsPip or a list of packages, got {type(v).__name__}")


def as_hooks(v: Deps | Sequence[Deps] | None, what: str) -> list[Deps]:
    """Normalise a ``call_before=`` / ``call_after=`` argument to a list of dependencies."""
    hooks = [] if v is None else [v] if isinstance(v, Deps) else list(v)
    for dep in hooks:
        if not isinstance(dep, Deps):
            raise TypeError(f"{what} takes DepsCall, DepsBash or DepsPip objects, got {type(dep).__name__}")
    return hooks


def injected_values(retvals: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    """The keyword arguments that (keyword, value) pairs inject, by Covalent's rule.

    >>> injected_values([("y", 1), ("g", "a"), ("y", 2), ("files", ("s", "d"))])
    {'y': [1, 2], 'g': 'a', 'files': [('s', 'd')]}
    """
    grouped: dict[str, list[Any]] = {}
    for key, value in retvals:
        grouped.setdefault(key, []).append(value)
    return {
        key: values[0] if len(values) == 1 and key not in RESERVED_RETVAL_KEYS else values
        for key, values in grouped.items()
    }


def call_with_hooks(fn: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any],
                    hooks: dict[str, Any]) -> Any:
    """Run ``fn`` as an electron on the worker, with its dependencies around it.

    ``hooks`` has the keys ``deps_bash``, ``deps_pip``, ``call_before`` and ``call_after``
    (any may be missing). An exception from any dependency propagates and fails the node.
    """
    before: list[Deps] = [d for d in (hooks.get("deps_bash"), hooks.get("deps_pip")) if d is not None]
    before += hooks.get("call_before") or []
    retvals: list[tuple[str, Any]] = []
    for dep in before:
        value = dep.run()
        if dep.retval_keyword:
            retvals.append((dep.retval_keyword, value))
    result = fn(*args, **{**kwargs, **injected_values(retvals)})
    for dep in hooks.get("call_after") or []:
        dep.run()
    return result
