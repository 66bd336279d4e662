"""What a lepton runs on the worker: a Python function by name, a shell command, a C function.

Each is a small picklable callable that a ``Lepton`` uses as its electron's function; it is
pickled with the workflow (its class by reference) and called with the node's arguments.
"""

from __future__ import annotations

import builtins
import ctypes
import importlib
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

INPUT, OUTPUT, INPUT_OUTPUT = 0, 1, 2
OUTPUT_MARKER = "COVALENT-LEPTON-OUTPUT-"


@dataclass(frozen=True, slots=True)
class PythonCall:
    """Import ``library_name`` and call its ``function_name``."""

    library_name: str
    function_name: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        module = importlib.import_module(self.library_name)
        try:
            func = getattr(module, self.function_name)
        except AttributeError:
            raise AttributeError(
                f"module {self.library_name!r} has no function {self.function_name!r}"
            ) from None
        return func(*args, **kwargs)


@dataclass(frozen=True, slots=True)
class ShellCall:
    """Run a shell command (a template, a function that returns it, or a function sourced
    from a script) and read its ``named_outputs`` back from the environment.

    A template's ``{name}`` fields are filled from the keyword arguments, which are also
    exported as environment variables; positional arguments become ``$1``, ``$2``... A
    ``builder`` (``ct.leptons.bash``) is called with the node's arguments instead.
    """

    command: str = ""
    builder: Callable[..., str] | None = None
    library_name: str = ""
    function_name: str = ""
    argtypes: tuple[tuple[str, int], ...] = ()
    named_outputs: tuple[str, ...] = ()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        shell = shutil.which("bash") or shutil.which("sh")
        if shell is None:
            raise FileNotFoundError("no bash or sh on this worker to run the lepton")
        echo = "".join(f" && echo {OUTPUT_MARKER}{o}: ${o}" for o in self.named_outputs)
        if self.builder is not None:
            argv = [shell, "-c", f"{self.builder(*args, **kwargs)}{echo}"]
        else:
            self._check_counts(kwargs)
            exports = "".join(f"export {k}={shlex.quote(str(v))} && " for k, v in kwargs.items())
            if self.command:
                argv = [shell, "-c", f"{exports}{self.command.format(**kwargs)}{echo}", "_",
                        *map(str, args)]
            else:
                quoted = " ".join(shlex.quote(str(a)) for a in args)
                script = (f"{exports}source {shlex.quote(self.library_name)} && "
                          f"{self.function_name} {quoted}{echo}")
                argv = [shell, "-c", script]
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              check=False)
        lines = proc.stdout.splitlines()
        sys.stdout.writelines(ln + "\n" for ln in lines if not ln.startswith(OUTPUT_MARKER))
        sys.stderr.write(proc.stderr)
        if proc.returncode != 0:
            raise RuntimeError(f"shell lepton exited with {proc.returncode}: {proc.stderr.strip()}")
        return self._outputs(lines)

    def _check_counts(self, kwargs: dict[str, Any]) -> None:
        attrs = [a for _, a in self.argtypes]
        n_io, n_out = attrs.count(INPUT_OUTPUT), attrs.count(OUTPUT)
        if n_io + n_out != len(self.named_outputs):
            raise ValueError(f"Expecting {n_io + n_out} named outputs.")
        if n_io != len(kwargs):
            raise ValueError(f"Expecting {n_io} keyword arguments.")
        for key in kwargs:
            if not key.isidentifier():
                raise ValueError(f"{key!r} cannot be a shell variable name")

    def _outputs(self, lines: Sequence[str]) -> Any:
        values: list[Any] = []
        for i, name in enumerate(self.named_outputs):
            marker = f"{OUTPUT_MARKER}{name}: "
            for line in lines:
                if line.startswith(marker):
                    type_name = self.argtypes[i][0] if i < len(self.argtypes) else "str"
                    convert = getattr(builtins, type_name, str)
                    values.append(convert(line[len(marker):]))
                    break
        if not values:
            return None
        return tuple(values) if len(values) > 1 else values[0]


@dataclass(frozen=True, slots=True)
class CCall:
    """Call ``function_name`` of the shared library ``library_name`` with ctypes.

    ``argtypes`` holds ctypes type names (``"c_int"``, ``"LP_c_double"`` for a pointer) with
    INPUT, OUTPUT or INPUT_OUTPUT. Scalars behind pointers and arrays are passed by address;
    the OUTPUT and INPUT_OUTPUT values are returned (one value, a tuple, or None).
    """

    library_name: str
    function_name: str
    argtypes: tuple[tuple[str, int], ...] = ()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs:
            raise ValueError(f"C leptons take positional arguments only, got {sorted(kwargs)}")
        func = ctypes.CDLL(self.library_name)[self.function_name]
        types: list[Any] = [
            ctypes.POINTER(getattr(ctypes, t[3:])) if t.startswith("LP_") else getattr(ctypes, t)
            for t, _ in self.argtypes
        ]
        func.argtypes, func.restype = types, None
        c_args = [self._c_arg(t, attr, args[i] if attr != OUTPUT and i < len(args) else None)
                  for i, (t, (_, attr)) in enumerate(zip(types, self.argtypes, strict=True))]
        func(*c_args)
        values = [_read(c) for c, (_, attr) in zip(c_args, self.argtypes, strict=True)
                  if attr != INPUT]
        if not values:
            return None
        return values[0] if len(values) == 1 else tuple(values)

    @staticmethod
    def _c_arg(ctype: Any, attr: int, arg: Any) -> Any:
        pointer = ctype.__name__.startswith("LP_")
        if pointer and hasattr(arg, "__getitem__"):
            return (ctype._type_ * len(arg))(*arg)
        if pointer and attr != INPUT:
            return ctypes.pointer(ctype._type_(arg) if arg is not None else ctype._type_())
        if attr == INPUT:
            return ctype(arg)
        raise ValueError(f"an OUTPUT argument needs a pointer type, not {ctype.__name__}")


def _read(c_arg: Any) -> Any:
    if hasattr(c_arg, "contents"):
        return c_arg.contents.value
    return list(c_arg)
