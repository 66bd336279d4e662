"""Record electron calls into a WorkflowGraph while a lattice function runs.

One ``GraphBuilder`` is active (in a ContextVar) for the duration of ``Lattice.build_graph``.
Electrons called while it is active add nodes instead of running. Node ids follow Covalent:
the call's node first, then, argument by argument, its collection and parameter nodes. Also as
in Covalent, tuples and sets (not named tuples) become lists: in electron arguments and in the
lattice's return value; what an electron returns is never converted.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ._executors import executor_name, executor_spec
from .wire.frame import clean_text, preview
from .wire.gather import NodeOutput, is_namedtuple
from .wire.graph import (
    ELECTRON_DICT_PREFIX,
    ELECTRON_LIST_PREFIX,
    PARAMETER_PREFIX,
    POSTPROCESS_NAME,
    SUBLATTICE_PREFIX,
    Edge,
    EdgeKind,
    NodeKind,
    WorkflowGraph,
)
from ._deps import DepsModule
from ._transport import dumps, dumps_function, dumps_settled, own_module, pickled_by_value
from .errors import WorkflowDefinitionError

if TYPE_CHECKING:
    from ._electron import Electron

_ACTIVE: ContextVar[GraphBuilder | None] = ContextVar("covalent_active_builder", default=None)

_MAX_PARAM_NAME = 1000


def active_builder() -> GraphBuilder | None:
    """The builder of the lattice being built in this context, if any."""
    return _ACTIVE.get()


@contextmanager
def building(builder: GraphBuilder) -> Iterator[GraphBuilder]:
    token = _ACTIVE.set(builder)
    try:
        with gc_paused():
            yield builder
    finally:
        _ACTIVE.reset(token)


@contextmanager
def gc_paused() -> Iterator[None]:
    """No automatic garbage collection inside (reference counting still frees what is not in
    a cycle). A large graph is millions of live objects and no garbage, and every full
    collection walks them all: they were a third of building a 100,000-node fan-out (#23)."""
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


class GraphBuilder:
    """Collect nodes, edges and blobs; ``defaults`` are the lattice's electron defaults."""

    def __init__(self, defaults: dict[str, Any] | None = None) -> None:
        self.graph = WorkflowGraph()
        self.defaults = defaults or {}
        self._fn_blobs: dict[int, tuple[int, str]] = {}
        self._hook_blobs: dict[int, int] = {}
        self.sources: dict[str, str] = {}  # fn_hash -> the function's source, for the web UI
        self._keep: list[Any] = []  # keeps cached objects alive so id() keys stay unique
        # id(function) -> (function, its signature, its argument counts): _electron._signature_info
        self.signatures: dict[int, tuple[Any, inspect.Signature | None, tuple[int, int] | None]] = {}

    def add_call(self, electron: Electron[Any, Any], args: tuple[Any, ...],
                 kwargs: dict[str, Any], meta: dict[str, Any] | None = None) -> Electron[Any, Any]:
        """Add the node of one electron call and its argument nodes; return the bound electron.
        ``meta``: its ``effective_metadata`` if the caller has it already."""
        late = _late()
        fn = electron.function
        is_sub = isinstance(fn, late.Lattice)
        name = (SUBLATTICE_PREFIX if is_sub else "") + electron.node_name
        meta = electron.effective_metadata(self.defaults) if meta is None else meta
        modules = _module_deps(meta)
        blob, digest = self._function_blob(fn, name, modules)
        spec = executor_spec(meta.get("executor"))
        derived = electron.kind is not NodeKind.ELECTRON  # x[0], x.attr: plain tasks, anywhere
        custom = spec.custom and not derived
        runner = meta.get("executor") if custom and not is_sub else None
        node_id = self.graph.add_node(
            name,
            NodeKind.SUBLATTICE if is_sub else electron.kind,
            executor=spec.name,
            options={} if derived else spec.options,
            plugin="" if derived else spec.plugin,
            custom=spec.custom if custom else "",
            fn=blob,
            fn_hash=digest,
            hooks=self._hooks_blob(electron, meta, runner, modules),
            metadata=_describe(meta),
        )
        names = electron.positional_names(len(args))
        skip = late.injected(meta)
        for i, value in enumerate(args):
            self.connect(node_id, names[i], value, EdgeKind.ARG, i)
        for key, value in kwargs.items():
            if key not in skip:
                self.connect(node_id, key, value, EdgeKind.KWARG, None)
        return late.Electron._bound(electron, node_id)

    def connect(self, dst: int, name: str, value: Any, kind: EdgeKind, index: int | None) -> None:
        """Feed ``value`` into node ``dst``: an edge from an electron, else new nodes."""
        g = self.graph
        if isinstance(value, _late().Electron):
            if _uncalled(value):
                # As in Covalent, an electron passed without calling it is a parameter holding
                # the function: a task that calls it runs it there as a plain function (#22).
                blob = g.add_blob(dumps(value, f"argument {name!r} (electron {value.node_name!r})"))
                node = g.add_node(PARAMETER_PREFIX + _safe_str(value.function),
                                  NodeKind.PARAMETER, value=blob)
                g.add_edge(node, dst, name, kind, index)
                return
            if value.node_id is None or value.builder is not self:
                raise WorkflowDefinitionError(
                    f"argument {name!r} is an electron that was not called inside this lattice"
                )
            g.edges.append(Edge(value.node_id, dst, name, kind, index))  # the common case
        elif is_namedtuple(value) and hasattr(type(value), "_make") and _holds_called(value):
            # A namedtuple of electrons' outputs reaches the electron as that namedtuple (it
            # carried the electrons themselves, unrun); one of plain values is a parameter.
            node = g.add_node(ELECTRON_TUPLE_NAME, NodeKind.TUPLE)
            g.nodes[node].value = g.add_blob(dumps(type(value), f"the type of argument {name!r}"))
            for i, item in enumerate(value):
                self.connect(node, name, item, EdgeKind.ARG, i)
            g.add_edge(node, dst, name, kind, index)
        elif isinstance(value, list | tuple | set) and not is_namedtuple(value):
            # As in Covalent, a tuple or a set reaches the electron as a list (#12 item 10).
            node = g.add_node(ELECTRON_LIST_PREFIX, NodeKind.LIST)
            for i, item in enumerate(value):
                self.connect(node, name, item, EdgeKind.ARG, i)
            g.add_edge(node, dst, name, kind, index)
        elif isinstance(value, dict):
            node = g.add_node(ELECTRON_DICT_PREFIX, NodeKind.DICT,
                              metadata={"keys": [preview(k) for k in value]})
            g.nodes[node].value = g.add_blob(dumps(list(value), f"the keys of argument {name!r}"))
            for i, (k, item) in enumerate(value.items()):
                self.connect(node, str(k), item, EdgeKind.ARG, i)
            g.add_edge(node, dst, name, kind, index)
        else:
            label = PARAMETER_PREFIX + _safe_str(value)
            blob = g.add_blob(dumps(value, f"argument {name!r} (a {type(value).__name__})"))
            node = g.add_node(label, NodeKind.PARAMETER, value=blob)
            g.add_edge(node, dst, name, kind, index)

    def add_wait(self, child: Electron[Any, Any], parents: list[Electron[Any, Any]]) -> None:
        for p in parents:
            if p.node_id is None or child.node_id is None:
                raise WorkflowDefinitionError("ct.wait takes electrons called inside the lattice")
            self.graph.add_edge(p.node_id, child.node_id, "!waiting_edge", EdgeKind.WAIT, None)

    def add_postprocess(self, retval: Any, executor: Any) -> int:
        """Add the last node: it rebuilds the lattice's return value from node outputs."""
        refs: list[int] = []
        template = self._template(retval, refs)
        g = self.graph
        blob = g.add_blob(dumps(template, "the lattice's return value"))
        order = {ref: i for i, ref in enumerate(dict.fromkeys(refs))}
        node_id = g.add_node(POSTPROCESS_NAME, NodeKind.POSTPROCESS,
                             executor=executor_name(executor), value=blob,
                             metadata={"template": _skeleton(template, order)})
        for ref in dict.fromkeys(refs):
            g.add_edge(ref, node_id, f"node:{ref}", EdgeKind.KWARG, None)
        return node_id

    def _template(self, value: Any, refs: list[int]) -> Any:
        if isinstance(value, _late().Electron) and not _uncalled(value):
            if value.node_id is None or value.builder is not self:
                raise WorkflowDefinitionError("the lattice returns an electron it did not call")
            refs.append(value.node_id)
            return NodeOutput(value.node_id)
        if is_namedtuple(value):  # its type kept, the outputs it holds filled in
            make = getattr(type(value), "_make", None)  # (a tuple with _fields only: as it is)
            return make(self._template(v, refs) for v in value) if make is not None else value
        if isinstance(value, list | tuple | set):
            # As in Covalent, the lattice's tuples and sets come back as lists (#12 item 10).
            return [self._template(v, refs) for v in value]
        if isinstance(value, dict):
            return {k: self._template(v, refs) for k, v in value.items()}
        if isinstance(value, frozenset):
            return frozenset(self._template(v, refs) for v in value)
        return value

    def _function_blob(self, fn: Any, name: str,
                       modules: list[ModuleType]) -> tuple[int | None, str]:
        if fn is None:
            return None, ""
        cached = self._fn_blobs.get(id(fn))
        if cached is None:
            data = dumps_function(fn, f"the function of electron {name!r}", modules)
            cached = (self.graph.add_blob(data), hashlib.sha256(data).hexdigest())
            self._fn_blobs[id(fn)] = cached
            source = source_of(fn)
            if source:
                self.sources[cached[1]] = source
            self._keep.append(fn)
        return cached

    def _hooks_blob(self, electron: Electron[Any, Any], meta: dict[str, Any], runner: Any,
                    modules: list[ModuleType]) -> int | None:
        """The node's hooks (deps, call_before, call_after) and its custom executor object
        (``runner``), pickled once per electron; a class from the user's own files by value."""
        hooks = {k: meta.get(k) for k in ("deps_bash", "deps_pip", "call_before", "call_after")}
        if runner is not None:
            hooks["executor"] = runner
        if not any(hooks.values()):
            return None
        key = id(electron.metadata)
        if key not in self._hook_blobs:
            own = own_module(type(runner)) if runner is not None else None
            with pickled_by_value([*modules, *([own] if own is not None else [])]):
                data = dumps_settled(hooks, f"the deps/call_before/call_after/executor of "
                                            f"{electron.node_name!r}")
            self._hook_blobs[key] = self.graph.add_blob(data)
            self._keep.append(electron.metadata)
        return self._hook_blobs[key]


SOURCE_LIMIT = 20_000


def source_of(fn: Any) -> str:
    """The source of a function (an electron's, a lattice's), or "" when Python has none."""
    inner = getattr(fn, "workflow_function", None) or getattr(fn, "function", None) or fn
    try:
        return clean_text(inspect.getsource(inner), SOURCE_LIMIT)
    except (OSError, TypeError):
        return ""


def _skeleton(template: Any, order: dict[int, int]) -> str:
    """The lattice's return value as text, ``⟨i⟩`` standing for the i-th node output it holds.

    >>> _skeleton({"total": NodeOutput(7), "n": 3}, {7: 0})
    "{'total': ⟨0⟩, 'n': 3}"
    """
    if isinstance(template, NodeOutput):
        return f"⟨{order[template.node_id]}⟩"
    if isinstance(template, list):
        return "[" + ", ".join(_skeleton(v, order) for v in template) + "]"
    if is_namedtuple(template):
        fields = ", ".join(f"{k}={_skeleton(v, order)}" for k, v in template._asdict().items())
        return f"{type(template).__name__}({fields})"
    if isinstance(template, tuple):
        inner = ", ".join(_skeleton(v, order) for v in template)
        return f"({inner}{',' if len(template) == 1 else ''})"
    if isinstance(template, dict):
        return "{" + ", ".join(f"{preview(k)}: {_skeleton(v, order)}" for k, v in template.items()) + "}"
    return preview(template)


ELECTRON_TUPLE_NAME = ":electron_tuple:"  # a namedtuple gathered from electrons' outputs


def _holds_called(value: Any) -> bool:
    """Whether ``value`` holds an electron called in a lattice, in any list, tuple, set or dict."""
    if isinstance(value, _late().Electron):
        return not _uncalled(value)
    if isinstance(value, list | tuple | set | frozenset):
        return any(_holds_called(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_called(v) for v in value.values())
    return False


class _Late:
    """Names of the modules that import this one, imported on first use, once: an import
    statement in ``add_call`` (once per electron call) and ``connect`` (once per argument
    value) was a third of building a graph of 32,000 edges (#23)."""

    def __init__(self) -> None:
        from ._electron import Electron, _injected
        from ._lattice import Lattice

        self.Electron, self.injected, self.Lattice = Electron, _injected, Lattice


@functools.cache
def _late() -> _Late:
    return _Late()


def _uncalled(value: Electron[Any, Any]) -> bool:
    """An electron as decorated (not the output of a call inside a lattice)."""
    return value.node_id is None and value.kind is NodeKind.ELECTRON and value.function is not None


def _module_deps(meta: dict[str, Any]) -> list[ModuleType]:
    """The modules the ``DepsModule``s of an electron's ``call_before`` name (imported here)."""
    found = [d.module for d in meta.get("call_before") or [] if isinstance(d, DepsModule)]
    return [m for m in found if m is not None]


def _safe_str(value: Any) -> str:
    """``str(value)``, cut to a label; of long text or bytes only the part kept is made (the
    whole of a 300 MB bytes argument took seconds, and a gigabyte, to be cut)."""
    if type(value) in (str, bytes, bytearray) and len(value) > _MAX_PARAM_NAME:
        value = value[:_MAX_PARAM_NAME]
    try:
        text = str(value)
    except Exception as exc:  # user __str__ may raise anything; the name is only a label
        text = f"<{type(value).__name__}: {exc}>"
    return text[:_MAX_PARAM_NAME]


def _describe(meta: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe summary of an electron's metadata, for display and for the server."""
    ex = meta.get("executor")
    bash = meta.get("deps_bash")
    pip = meta.get("deps_pip")
    return {
        "executor": executor_name(ex),
        "executor_data": ex.to_dict() if ex is not None and hasattr(ex, "to_dict") else {},
        "deps": {
            "bash": list(bash.commands) if bash is not None else [],
            "pip": list(pip.packages) if pip is not None else [],
        },
        "call_before": [repr(d) for d in meta.get("call_before") or []],
        "call_after": [repr(d) for d in meta.get("call_after") or []],
    }
