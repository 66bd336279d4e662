"""Leptons: tasks whose code is not a Python function of the workflow.

A ``Lepton`` is an electron whose function is a Python function named by module and name, a
shell command or script, or a C function of a shared library (``_lepton_calls``). Called
inside a lattice it records a node like any electron and runs on a worker; called outside,
it runs at once. ``bash`` (``ct.leptons.bash``) turns a function that returns a command into
such a task.

Leptons take ``files``, ``deps_bash``, ``deps_pip``, ``call_before`` and ``call_after`` like
electrons, but, as in Covalent, no ``DepsCall`` may inject a ``retval_keyword``, and
``files`` is not passed to the command.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from ._builder import active_builder
from ._deps import Deps, DepsBash, DepsPip
from ._electron import Electron, _check_signature, hook_metadata
from ._file_transfer.file_transfer import FileTransfer
from ._lepton_calls import INPUT, INPUT_OUTPUT, OUTPUT, CCall, PythonCall, ShellCall
from .errors import WorkflowDefinitionError


class Lepton(Electron[..., Any]):
    """A task in another language (or a Python function named by module), used like an electron.

    Args:
        language: ``"python"``, ``"bash"`` / ``"shell"``, or ``"C"``.
        library_name: Python module, shell script to source, or shared library.
        function_name: function to call in ``library_name``.
        argtypes: ``(type, Lepton.INPUT | OUTPUT | INPUT_OUTPUT)`` per argument: ctypes types
            for C; for shell, the Python type of each named output, in order.
        command: shell command (scripting languages); ``{name}`` fields are filled from the
            keyword arguments, also exported as environment variables. A list is joined with
            ``&&``.
        named_outputs: shell variables whose final values the task returns.
        display_name: node name (default: the function name or the command).
        executor, files, deps_bash, deps_pip, call_before, call_after: as for ``ct.electron``.

    Raises:
        WorkflowDefinitionError (a ValueError): an invalid combination of arguments, an
            unknown language, or a ``DepsCall`` with a ``retval_keyword``.

    Example:
        >>> task = Lepton("python", library_name="math", function_name="hypot")
        >>> task(3, 4)
        5.0
    """

    INPUT = INPUT
    OUTPUT = OUTPUT
    INPUT_OUTPUT = INPUT_OUTPUT

    _LANG_PY = ("Python", "python")
    _LANG_C = ("C", "c")
    _LANG_SHELL = ("bash", "shell")
    _SCRIPTING_LANGUAGES = _LANG_PY + _LANG_SHELL

    def __init__(
        self,
        language: str = "python",
        *,
        library_name: str = "",
        function_name: str = "",
        argtypes: Sequence[tuple[Any, int]] = (),
        command: str | Sequence[str] | Callable[..., str] = "",
        named_outputs: Sequence[str] = (),
        display_name: str = "",
        executor: Any = None,
        files: Sequence[FileTransfer] = (),
        deps_bash: DepsBash | list[str] | str | None = None,
        deps_pip: DepsPip | list[str] | None = None,
        call_before: Deps | Sequence[Deps] = (),
        call_after: Deps | Sequence[Deps] = (),
    ) -> None:
        self.language = language
        self.library_name = library_name
        self.function_name = function_name
        self.argtypes = [(t if isinstance(t, str) else t.__name__, a) for t, a in argtypes]
        self.command: str | Callable[..., str] = (
            command if isinstance(command, str) or callable(command) else " && ".join(command)
        )
        self.named_outputs = list(named_outputs)
        self.display_name = display_name
        self._validate()
        meta = hook_metadata(executor, files, deps_bash, deps_pip, call_before, call_after,
                             inject_files=False)
        for dep in meta["call_before"] + meta["call_after"]:
            if dep.retval_keyword:
                raise WorkflowDefinitionError(
                    f"DepsCall retval_keyword {dep.retval_keyword!r}: leptons take no "
                    "retval_keyword; remove it from the DepsCall"
                )
        name = display_name or function_name or (self.command if isinstance(self.command, str)
                                                 else getattr(self.command, "__name__", "bash"))
        super().__init__(self._runner(), metadata=meta, name=name)

    def _validate(self) -> None:
        lang = self.language
        if lang not in self._SCRIPTING_LANGUAGES + self._LANG_C:
            raise WorkflowDefinitionError(f"Language '{lang}' is not supported.")
        if lang in self._SCRIPTING_LANGUAGES:
            if self.command and self.library_name:
                raise WorkflowDefinitionError(
                    "Invalid argument combination: library_name and command. Use one or the other."
                )
            if not (self.command or self.library_name):
                raise WorkflowDefinitionError("Specify either library_name or command using this language.")
            if lang in self._LANG_PY and self.command:
                raise WorkflowDefinitionError("A Python lepton calls library_name.function_name, not a command.")
        else:
            if self.command:
                raise WorkflowDefinitionError(f"Keyword argument 'command' incompatible with language {lang}.")
            if self.named_outputs:
                raise WorkflowDefinitionError(
                    f"Keyword argument 'named_outputs' incompatible with language {lang}."
                )
        if self.library_name and not self.function_name:
            raise WorkflowDefinitionError("Must specify function_name when calling a library.")

    def _runner(self) -> Callable[..., Any]:
        if self.language in self._LANG_PY:
            return PythonCall(self.library_name, self.function_name)
        if self.language in self._LANG_C:
            return CCall(self.library_name, self.function_name, tuple(self.argtypes))
        command, builder = (self.command, None) if isinstance(self.command, str) else ("", self.command)
        return ShellCall(command, builder, self.library_name, self.function_name,
                         tuple(self.argtypes), tuple(self.named_outputs))


def bash(
    _func: Callable[..., str] | None = None,
    *,
    display_name: str = "",
    executor: Any = None,
    files: Sequence[FileTransfer] = (),
    deps_bash: DepsBash | list[str] | str | None = None,
    deps_pip: DepsPip | list[str] | None = None,
    call_before: Deps | Sequence[Deps] = (),
    call_after: Deps | Sequence[Deps] = (),
) -> Any:
    """Turn a function that returns a bash command into a task that runs that command.

    The function is called on the worker with the task's arguments (electron outputs
    included); the command's output goes to the node's stdout and stderr, and a non-zero
    exit fails the node. The task returns None.

    Example:
        >>> @bash
        ... def greet(name):
        ...     return f"echo hello {name}"
        >>> greet("world")  # outside a lattice it runs at once
        hello world
    """

    def decorate(func: Callable[..., str]) -> Callable[..., Any]:
        params = inspect.signature(func).parameters.values()
        arg_names = tuple(p.name for p in params
                          if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))

        @functools.wraps(func)
        def task(*args: Any, **kwargs: Any) -> Any:
            lepton = Lepton("bash", command=func, display_name=display_name or func.__name__,
                            executor=executor, files=files, deps_bash=deps_bash,
                            deps_pip=deps_pip, call_before=call_before, call_after=call_after)
            lepton._arg_names = arg_names
            if active_builder() is not None:
                _check_signature(func, lepton.node_name, args, kwargs)
            return lepton(*args, **kwargs)

        return task

    return decorate(_func) if _func is not None else decorate
