"""Wrap a Python value so it travels between client, server and workers as opaque bytes.

The dispatcher stores these bytes and hands them to workers; it never unpickles them.
"""

from __future__ import annotations

import base64
import importlib
import io
import platform
import site
import sys
import sysconfig
import threading
import types
from collections import ChainMap
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cloudpickle

from .errors import SerializationError


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


def dumps(obj: Any, what: str) -> bytes:
    """Cloudpickle ``obj``; raise SerializationError naming ``what`` when it cannot be pickled."""
    try:
        with io.BytesIO() as buf:
            _Pickler(buf).dump(obj)
            return buf.getvalue()
    except Exception as exc:  # cloudpickle raises many types (TypeError, PicklingError, ...)
        raise SerializationError(
            f"{what} cannot be pickled: {type(exc).__name__}: {exc}"
        ) from exc


_BY_VALUE_LOCK = threading.Lock()


@contextmanager
def pickled_by_value(modules: Iterable[types.ModuleType]) -> Iterator[None]:
    """Pickle what these modules define by value while the block runs (``DepsModule``, and the
    class of a custom executor defined in the user's own files), so a worker that cannot import
    them can still load it."""
    with _BY_VALUE_LOCK:
        added = []
        for module in dict.fromkeys(modules):
            if not cloudpickle.cloudpickle._is_registered_pickle_by_value(module):
                cloudpickle.register_pickle_by_value(module)
                added.append(module)
        try:
            yield
        finally:
            for module in added:
                cloudpickle.unregister_pickle_by_value(module)


def by_value_now(module: str) -> bool:
    """Whether ``module`` is being pickled by value at this moment."""
    found = sys.modules.get(module)
    return found is not None and bool(cloudpickle.cloudpickle._is_registered_pickle_by_value(found))


def own_module(cls: type) -> types.ModuleType | None:
    """The top-level package of the user's own file that defines ``cls``: not installed (no
    site-packages), not the standard library, not ``covalent``, not ``__main__`` (which
    cloudpickle already sends by value). Workers may not be able to import it."""
    name = cls.__module__
    top = name.split(".", 1)[0]
    if name == "__main__" or top in ("covalent", "builtins") or name not in sys.modules:
        return None
    file = getattr(sys.modules[name], "__file__", None)
    if not file:
        return None
    path = Path(file).resolve()
    if any(path.is_relative_to(root) for root in _installed_roots()):
        return None
    return sys.modules.get(top)


def _installed_roots() -> list[Path]:
    roots = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    roots.update(site.getsitepackages() if hasattr(site, "getsitepackages") else [])
    roots.add(site.getusersitepackages())
    return [Path(r).resolve() for r in roots if r]


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
    """Import ``module.qualname``; unwrap an Electron or Lattice to its function."""
    obj = import_object(module, qualname)
    inner = getattr(obj, "function", None) or getattr(obj, "workflow_function", None)
    return inner if inner is not None else obj


class _ByReference:
    """Pickles as "import this function" (what pickle does for module-level functions)."""

    def __init__(self, module: str, qualname: str) -> None:
        self.module, self.qualname = module, qualname

    def __reduce__(self) -> tuple[Any, ...]:
        return (_import_attr, (self.module, self.qualname))


def dumps_function(fn: Any, what: str, by_value: Iterable[types.ModuleType] = ()) -> bytes:
    """Pickle a user function, by reference when its module exposes it as an electron.

    ``@ct.electron`` replaces the module attribute by an Electron, so cloudpickle no longer
    finds the function under its name and would pickle it by value, globals and all. Like
    pickle for any module-level function, we send "import module.name" instead; functions of
    ``__main__`` and local functions still travel by value, and so does everything of the
    ``by_value`` modules (``DepsModule``).
    """
    modules = list(by_value)
    if modules:
        with pickled_by_value(modules):
            return dumps(fn, what)
    module = getattr(fn, "__module__", None)
    if module and module in sys.modules:
        owner = getattr(sys.modules[module], getattr(fn, "__name__", ""), None)
        where = module_level_name(owner, fn) if owner is not None else None
        if where is not None and getattr(owner, "function", None) is fn:
            return dumps(_ByReference(*where), what)
    return dumps(fn, what)


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
