"""The ``@lattice`` decorator: a workflow whose electron calls become one graph.

``Lattice.build_graph(*args, **kwargs)`` runs the workflow function once, on the client, with a
``GraphBuilder`` active: each electron call adds a node (see ``_builder``). The return value
becomes the template of the final ``:postprocess:reconstruct`` node. Called directly (outside a dispatch),
a lattice is its function, so a lattice called inside another lattice is inlined.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Generic, ParamSpec, TypeVar, overload

from ._builder import GraphBuilder, building
from ._deps import Deps, DepsBash, DepsPip, as_deps_bash, as_deps_pip, as_hooks
from ._electron import Electron
from .wire.graph import WorkflowGraph
from ._transport import TransportableObject
from .errors import SerializationError, WorkflowDefinitionError

P = ParamSpec("P")
R = TypeVar("R")


class Lattice(Generic[P, R]):
    """A workflow: a function whose electron calls form a graph."""

    def __init__(
        self,
        workflow_function: Callable[P, R],
        *,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if not callable(workflow_function):
            raise TypeError(f"@lattice needs a function, got {type(workflow_function).__name__}")
        self.workflow_function = workflow_function
        self.metadata: dict[str, Any] = metadata or {}
        self.__name__ = getattr(workflow_function, "__name__", "lattice")
        self.__doc__ = getattr(workflow_function, "__doc__", None)
        self.__wrapped__ = workflow_function
        self.__module__ = getattr(workflow_function, "__module__", __name__)
        self.transport_graph: WorkflowGraph | None = None
        self.inputs: TransportableObject | None = None
        self.args: tuple[Any, ...] = ()
        self.kwargs: dict[str, Any] = {}
        self.post_processing = False
        # {electron name: replacement}, from ct.redispatch(..., replace_electrons=...)
        self.replace_electrons: dict[str, Callable[..., Any]] = {}

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.workflow_function(*args, **kwargs)

    def get_metadata(self, name: str) -> Any:
        return self.metadata.get(name)

    def set_metadata(self, name: str, value: Any) -> None:
        self.metadata[name] = value

    def build_graph(self, *args: Any, **kwargs: Any) -> WorkflowGraph:
        """Run the workflow function with a builder active and return its graph.

        Raises:
            WorkflowDefinitionError: the function uses an electron output illegally.
            SerializationError: an argument or function cannot be pickled.
            Exception: whatever the workflow function itself raises, as it raised it (with
                a note naming the lattice).
        """
        return self.build_graph_with_sources(*args, **kwargs)[0]

    def build_graph_with_sources(self, *args: Any, **kwargs: Any) -> tuple[WorkflowGraph, dict[str, str]]:
        """``build_graph``, and the source of each function by its blob's hash (for the UI)."""
        builder = GraphBuilder(defaults=self.metadata)
        with building(builder):
            try:
                retval = self.workflow_function(*args, **kwargs)
            except (WorkflowDefinitionError, SerializationError):
                raise
            except Exception as exc:
                # The user's own exception, unwrapped, so `except RuntimeError:` around
                # ct.dispatch still catches it (#12 item 6); the note says where it came from.
                exc.add_note(f"raised by lattice {self.__name__!r} while its graph was built "
                             "(before anything was sent to the dispatcher)")
                raise
            builder.add_postprocess(retval, self.metadata.get("workflow_executor"))
        self.transport_graph = builder.graph
        self.args, self.kwargs = args, dict(kwargs)
        self.inputs = TransportableObject({"args": list(args), "kwargs": dict(kwargs)})
        return builder.graph, builder.sources

    def draw(self, *args: Any, **kwargs: Any) -> None:
        """Build the graph for these inputs without running it, and show it: inline in a
        notebook, else on the dispatcher's preview page (its link is printed)."""
        from ._draw import draw

        draw(self, args, kwargs)

    def dispatch(self, *args: Any, **kwargs: Any) -> str:
        """Deprecated in Covalent: ``ct.dispatch(lattice)(*args, **kwargs)``."""
        from ._dispatch import dispatch

        return dispatch(self)(*args, **kwargs)

    def dispatch_sync(self, *args: Any, **kwargs: Any) -> Any:
        """Deprecated in Covalent: ``ct.dispatch_sync(lattice)(*args, **kwargs)``."""
        from ._dispatch import dispatch_sync

        return dispatch_sync(self)(*args, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["transport_graph"] = None  # the server keeps the graph; don't pickle it twice
        state["inputs"] = None
        state["args"], state["kwargs"] = (), {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"<Lattice {self.__name__!r}>"


@overload
def lattice(_func: Callable[P, R], /) -> Lattice[P, R]: ...
@overload
def lattice(
    *,
    backend: Any = None,
    executor: Any = None,
    workflow_executor: Any = None,
    deps_bash: DepsBash | list[str] | str | None = None,
    deps_pip: DepsPip | list[str] | None = None,
    call_before: Deps | list[Deps] | None = None,
    call_after: Deps | list[Deps] | None = None,
    triggers: Any = None,
) -> Callable[[Callable[P, R]], Lattice[P, R]]: ...
def lattice(
    _func: Callable[P, R] | None = None,
    /,
    *,
    backend: Any = None,
    executor: Any = None,
    workflow_executor: Any = None,
    deps_bash: DepsBash | list[str] | str | None = None,
    deps_pip: DepsPip | list[str] | None = None,
    call_before: Deps | list[Deps] | None = None,
    call_after: Deps | list[Deps] | None = None,
    triggers: Any = None,
) -> Lattice[P, R] | Callable[[Callable[P, R]], Lattice[P, R]]:
    """Turn a function into a lattice (a workflow) that ``ct.dispatch`` can run.

    Args:
        executor: default executor of its electrons that do not name one.
        workflow_executor: executor of the ``:postprocess:reconstruct`` node.
        deps_bash, deps_pip, call_before, call_after: defaults for electrons without their own.
        triggers: triggers to register when dispatched; the dispatch then waits for them.

    Returns:
        A ``Lattice``; ``ct.dispatch(lat)(*args)`` runs it on the dispatcher.

    Example:
        >>> @lattice
        ... def wf(x): return x
        >>> wf(3)
        3
    """
    ex = executor if executor is not None else backend
    if triggers is not None and not isinstance(triggers, list | tuple):
        triggers = [triggers]
    meta = {
        "executor": ex,
        "workflow_executor": workflow_executor,
        "deps_bash": as_deps_bash(deps_bash),
        "deps_pip": as_deps_pip(deps_pip),
        "call_before": as_hooks(call_before, "call_before"),
        "call_after": as_hooks(call_after, "call_after"),
        "triggers": list(triggers) if triggers else None,
    }

    def wrap(func: Callable[P, R]) -> Lattice[P, R]:
        # On an electron (``@ct.lattice`` over ``@ct.electron``) the workflow is that one
        # electron's call: a one-node workflow, as Covalent's how-tos use it (#12 item 2).
        lat: Lattice[P, R] = Lattice(func, metadata=dict(meta))
        functools.update_wrapper(lat, func, updated=())
        return lat

    return wrap(_func) if _func is not None else wrap
