"""Wrap a Python value so it travels between client, server and workers as opaque bytes.

The dispatcher stores these bytes and hands them to workers; it never unpickles them.

What travels by value: functions of ``__main__`` (a script, a notebook), local functions, and
every function and class of a *local module*: a module that no installed distribution provides,
whose file is in the directory of the script being run (or the working directory of a
notebook or REPL), such as a ``helpers.py`` next to a notebook. Workers cannot import those, so
they are registered with ``cloudpickle.register_pickle_by_value`` before anything is pickled
(#27). Everything else (installed packages) travels by reference and must be installed where the
workers run; a module registered by hand with ``cloudpickle.register_pickle_by_value`` travels
by value too.
"""

from __future__ import annotations

import base64
import functools
import importlib
import importlib.metadata
import io
import os
import pickle
import platform
import site
import sys
import threading
import types
from collections import ChainMap
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cloudpickle

from .errors import SerializationError, WorkflowDefinitionError


_DYNAMIC = "<dynamic-code>"


def _reduce_code(code: types.CodeType) -> tuple[Any, tuple[Any, ...]]:
    """cloudpickle's reduction of a code object, with its file name kept.

    cloudpickle 3.1.3 names every pickled code object ``<dynamic-code>``, so a traceback on a
    worker shows no source line of the user's function; we put the real name back (the same
    file name every time, so the pickle stays deterministic for ``reuse_previous_results``).
    """
    ctor, args = _CLOUDPICKLE_CODE_REDUCE(code)
    at = _FILENAME_AT.get(len(args))
    if at is not None and args[at] == _DYNAMIC and code.co_filename != _DYNAMIC:
        args = (*args[:at], code.co_filename, *args[at + 1:])
    return ctor, args


_CLOUDPICKLE_CODE_REDUCE: Any = cloudpickle.Pickler.dispatch_table[types.CodeType]
# Where CodeType's constructor takes the file name, by its number of arguments (3.11-3.13)
_FILENAME_AT = {18: 10}


class _Pickler(cloudpickle.Pickler):  # type: ignore[misc]
    dispatch_table = ChainMap({types.CodeType: _reduce_code}, cloudpickle.Pickler.dispatch_table)


_OWN = frozenset({"covalent", "dispatcher", "triggers"})


class _LocalModules:
    """Registers the local modules (see the module docstring) by value, once each."""

    def __init__(self) -> None:
        self.seen = 0  # len(sys.modules) at the last scan: a scan only when modules were added
        self.checked: set[str] = set()

    def register(self) -> None:
        if len(sys.modules) == self.seen:
            return
        home = _user_dir()
        for name, module in list(sys.modules.items()):
            if name not in self.checked:
                self.checked.add(name)
                if home is not None and _is_local(name, module, home):
                    cloudpickle.register_pickle_by_value(module)
        self.seen = len(sys.modules)


def _user_dir() -> Path | None:
    """The directory of the script being run, or the working directory (notebook, REPL)."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    try:
        return Path(path).resolve().parent if path else Path.cwd().resolve()
    except OSError:  # the working directory was deleted
        return None


def _is_local(name: str, module: Any, home: Path) -> bool:
    top = name.partition(".")[0]
    path = getattr(module, "__file__", None)
    if not isinstance(path, str) or name == "__main__" or top in _OWN:
        return False
    file = Path(path).resolve()
    if not file.is_relative_to(home) or any(file.is_relative_to(p) for p in _install_dirs()):
        return False
    return top not in sys.stdlib_module_names and top not in _installed_tops()


@functools.cache
def _installed_tops() -> frozenset[str]:
    """Top-level names that installed distributions provide (editable installs included)."""
    return frozenset(importlib.metadata.packages_distributions())


@functools.cache
def _install_dirs() -> tuple[Path, ...]:
    dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix, site.getusersitepackages(),
            *site.getsitepackages()}
    return tuple(Path(d).resolve() for d in dirs if d and os.path.isabs(d))


local_modules = _LocalModules()


def by_value(module: str) -> bool:
    """True if functions of ``module`` are pickled by value (registered with cloudpickle)."""
    registered = cloudpickle.list_registry_pickle_by_value()
    parts = module.split(".")
    return any(".".join(parts[:i]) in registered for i in range(1, len(parts) + 1))


_BY_VALUE_LOCK = threading.Lock()


@contextmanager
def pickled_by_value(modules: Iterable[types.ModuleType]) -> Iterator[None]:
    """Pickle what these modules define by value while the block runs (``DepsModule``, and the
    class of a custom executor defined in the user's own files), so a worker that cannot import
    them can still load it."""
    with _BY_VALUE_LOCK:
        added = []
        for module in dict.fromkeys(modules):
            if not by_value(module.__name__):
                cloudpickle.register_pickle_by_value(module)
                added.append(module)
        try:
            yield
        finally:
            for module in added:
                cloudpickle.unregister_pickle_by_value(module)


def own_module(cls: type) -> types.ModuleType | None:
    """The top-level package of the user's own file that defines ``cls``: not installed, not
    the standard library, not ours, not ``__main__`` (which cloudpickle already sends by value).
    Workers may not be able to import it."""
    name = cls.__module__
    top = name.split(".", 1)[0]
    if name == "__main__" or top in _OWN or top in sys.stdlib_module_names or name not in sys.modules:
        return None
    file = getattr(sys.modules[name], "__file__", None)
    if not file or any(Path(file).resolve().is_relative_to(p) for p in _install_dirs()):
        return None
    return sys.modules.get(top)


PLAIN_TYPES = frozenset({int, float, str, bytes, bool, type(None)})  # pickled the same by pickle


def dumps(obj: Any, what: str) -> bytes:
    """Cloudpickle ``obj``; raise SerializationError naming ``what`` when it cannot be pickled.

    >>> dumps(7, "x") == cloudpickle.dumps(7) and dumps("a", "x") == cloudpickle.dumps("a")
    True
    """
    if type(obj) in PLAIN_TYPES:  # a parameter, most often: the same bytes in a tenth of the time
        return pickle.dumps(obj, protocol=cloudpickle.DEFAULT_PROTOCOL)
    local_modules.register()
    try:
        with io.BytesIO() as buf:
            _Pickler(buf).dump(obj)
            return buf.getvalue()
    except WorkflowDefinitionError as exc:  # an electron's output where none can be put
        raise WorkflowDefinitionError(f"{what}: {exc}") from None
    except Exception as exc:  # cloudpickle raises many types (TypeError, PicklingError, ...)
        raise SerializationError(
            f"{what} cannot be pickled: {type(exc).__name__}: {exc}"
        ) from exc


def import_object(module: str, qualname: str) -> Any:
    """Import ``module`` and walk ``qualname`` to the object it names."""
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def module_level_name(obj: Any, fn: Any) -> tuple[str, str] | None:
    """(module, qualname) under which ``obj`` can be imported, if it can (not __main__)."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", "")
    if not module or module == "__main__" or "<locals>" in qualname or module not in sys.modules:
        return None
    try:
        found = import_object(module, qualname)
    except (AttributeError, ImportError):
        return None
    return (module, qualname) if found is obj else None


def _import_attr(module: str, qualname: str) -> Any:
    """Import ``module.qualname``; unwrap an Electron or Lattice to its function. Runs where
    the function is unpickled (a worker): a module missing there says what to do."""
    try:
        obj = import_object(module, qualname)
    except ModuleNotFoundError as exc:
        top = module.partition(".")[0]
        raise ModuleNotFoundError(
            f"{exc} where {qualname} (from module {module!r}) is unpickled: it was sent by "
            f"reference, so the workers must import {module!r}. Install it where the workers "
            f"run, or send it by value: `import cloudpickle, {top}; "
            f"cloudpickle.register_pickle_by_value({top})` before dispatching "
            f"(a module next to your script or notebook is sent by value already)",
            name=exc.name) from exc
    inner = getattr(obj, "function", None) or getattr(obj, "workflow_function", None)
    return inner if inner is not None else obj


class _ByReference:
    """Pickles as "import this function" (what pickle does for module-level functions)."""

    def __init__(self, module: str, qualname: str) -> None:
        self.module, self.qualname = module, qualname

    def __reduce__(self) -> tuple[Any, ...]:
        return (_import_attr, (self.module, self.qualname))


def dumps_function(fn: Any, what: str, modules: Iterable[types.ModuleType] = ()) -> bytes:
    """Pickle a user function, by reference when its module exposes it as an electron.

    ``@ct.electron`` replaces the module attribute by an Electron, so cloudpickle no longer
    finds the function under its name and would pickle it by value, globals and all. Like
    pickle for any module-level function, we send "import module.name" instead; functions of
    ``__main__``, local functions and functions of modules sent by value (see the module
    docstring, and ``modules``: a ``DepsModule``'s) still travel by value.
    """
    wanted = list(modules)
    if wanted:
        with pickled_by_value(wanted):
            return dumps_settled(fn, what)
    local_modules.register()
    module = getattr(fn, "__module__", None)
    if module and module in sys.modules and not by_value(module):
        owner = getattr(sys.modules[module], getattr(fn, "__name__", ""), None)
        where = module_level_name(owner, fn) if owner is not None else None
        if where is not None and getattr(owner, "function", None) is fn:
            return dumps(_ByReference(*where), what)
    return dumps_settled(fn, what)


def dumps_settled(obj: Any, what: str) -> bytes:
    """``dumps(obj)`` in the bytes the same object has once unpickled: pickled, unpickled and
    pickled again. A function sent by value pickles to other bytes after a round trip (its
    code's names are interned again as it is rebuilt, so a string equal to one of them is no
    longer the same object and is written twice), and a redispatch pickles the functions of
    the stored lattice, so reuse (which compares bytes) would find nothing unchanged. One
    round trip reaches bytes that further round trips keep."""
    data = dumps(obj, what)
    if len(data) > SETTLE_MAX:  # a function carrying data: settling costs it twice over
        return data
    try:
        return dumps(cloudpickle.loads(data), what)
    except Exception:  # noqa: BLE001  (not loadable here: what it was is what is sent)
        return data


SETTLE_MAX = 1 << 20  # bytes of a pickle settled at most (a function is some kilobytes)


class TransportableObject:
    """A value held as cloudpickle bytes plus a readable ``object_string``.

    >>> t = TransportableObject([1, 2])
    >>> t.get_deserialized(), t.object_string
    ([1, 2], '[1, 2]')
    """

    __slots__ = ("_bytes", "object_string", "python_version", "_type_name")

    def __init__(self, obj: Any) -> None:
        self._bytes = dumps(obj, f"value of type {type(obj).__name__}")
        self.object_string = _short_repr(obj)
        self.python_version = platform.python_version()
        self._type_name = type(obj).__name__

    @classmethod
    def from_bytes(cls, data: bytes, object_string: str = "") -> TransportableObject:
        """Wrap already-pickled bytes without unpickling them."""
        t = cls.__new__(cls)
        t._bytes = data
        t.object_string = object_string
        t.python_version = platform.python_version()
        t._type_name = ""
        return t

    @staticmethod
    def make_transportable(obj: Any) -> TransportableObject:
        """Return ``obj`` if it is already transportable, else wrap it."""
        return obj if isinstance(obj, TransportableObject) else TransportableObject(obj)

    def get_deserialized(self) -> Any:
        """Unpickle and return the wrapped value."""
        return cloudpickle.loads(self._bytes)

    def get_serialized(self) -> bytes:
        """The pickled bytes of the wrapped value."""
        return self._bytes

    def serialize(self) -> bytes:
        """The pickled bytes (Covalent name)."""
        return self._bytes

    def to_base64(self) -> str:
        return base64.b64encode(self._bytes).decode("ascii")

    @property
    def size(self) -> int:
        return len(self._bytes)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TransportableObject) and other._bytes == self._bytes

    def __hash__(self) -> int:
        return hash(self._bytes)

    def __repr__(self) -> str:
        return f"TransportableObject({self.object_string})"

    def __getstate__(self) -> dict[str, Any]:
        return {s: getattr(self, s) for s in self.__slots__}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v)


def _short_repr(obj: Any, limit: int = 200) -> str:
    try:
        text = str(obj)
    except Exception as exc:  # a user __str__ may raise anything
        text = f"<{type(obj).__name__}: str() failed: {exc}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
