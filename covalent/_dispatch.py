"""Send lattices to the dispatcher: ``dispatch``, ``dispatch_sync``, ``redispatch``,
``stop_triggers``.

A dispatch is ONE request: the graph as JSON and every pickled function and value as blobs
(see ``covalent.wire``). The client picks the dispatch id, so a retried request cannot
create a second dispatch.
"""

from __future__ import annotations

import copy
import hashlib
import json
import platform
import uuid
import warnings
from collections.abc import Callable
from typing import Any

import cloudpickle

from . import _client, wire
from .config import client_config
from ._builder import gc_paused, source_of
from .wire.frame import preview
from .wire.graph import NodeKind, WorkflowGraph
from ._lattice import Lattice
from ._notebook import DispatchId
from ._results_manager.result import Result
from ._results_manager.results_manager import _check_id, get_result
from ._transport import dumps
from .errors import WorkflowDefinitionError


def _client_versions() -> dict[str, str]:
    return {"python": platform.python_version(), "cloudpickle": cloudpickle.__version__}


def build_submission(lat: Lattice[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                     *, dispatch_id: str, disable_run: bool) -> bytes:
    """Build the graph of ``lat(*args, **kwargs)`` and frame the whole dispatch request."""
    return b"".join(submission_parts(lat, args, kwargs, dispatch_id=dispatch_id,
                                     disable_run=disable_run))


def submission_parts(lat: Lattice[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                     *, dispatch_id: str, disable_run: bool,
                     with_triggers: bool = True) -> list[bytes]:
    """``build_submission`` as the parts of the body, sent one after the other;
    ``with_triggers``: register the lattice's triggers (a redispatch runs it once instead)."""
    with gc_paused():
        return _submission_parts(lat, args, kwargs, dispatch_id=dispatch_id,
                                 disable_run=disable_run, with_triggers=with_triggers)


def _submission_parts(lat: Lattice[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                      *, dispatch_id: str, disable_run: bool,
                      with_triggers: bool) -> list[bytes]:
    graph, sources = lat.build_graph_with_sources(*args, **kwargs)
    replace = getattr(lat, "replace_electrons", None)  # a lattice stored before it had them
    if replace:
        _replace_functions(graph, replace)
    blobs = graph.blobs
    inputs = len(blobs)
    blobs.append(lat.inputs.get_serialized() if lat.inputs is not None else dumps({}, "inputs"))
    lattice_blob = len(blobs)
    blobs.append(dumps(lat, f"lattice {lat.__name__!r}"))
    triggers = (lat.metadata.get("triggers") or []) if with_triggers else []
    header = {
        "dispatch_id": dispatch_id,
        "name": lat.__name__,
        "graph": graph.to_json(),
        "inputs": inputs,
        "lattice": lattice_blob,
        "disable_run": bool(disable_run or triggers),
        "client": _client_versions(),
        "triggers": [t.registration() for t in triggers],
        # What people look at in the web UI; the server cannot unpickle anything to show it.
        "sources": sources,
        "lattice_source": source_of(lat),
        "inputs_preview": {"args": [preview(a) for a in args],
                           "kwargs": {str(k): preview(v) for k, v in kwargs.items()}},
    }
    return wire.pack_parts(header, blobs)


def _check_lattice(orig_lattice: Any) -> Lattice[Any, Any]:
    if isinstance(orig_lattice, Lattice):
        return orig_lattice
    raise WorkflowDefinitionError(
        f"ct.dispatch needs a @ct.lattice, got {type(orig_lattice).__name__}"
        + (" (decorate the workflow function with @ct.lattice)" if callable(orig_lattice) else "")
    )


def dispatch(orig_lattice: Lattice[Any, Any], dispatcher_addr: str | None = None,
             disable_run: bool = False) -> Callable[..., str]:
    """Wrap a lattice so that calling it sends it to the dispatcher; returns the dispatch id.

    Args:
        orig_lattice: the ``@ct.lattice`` to run.
        dispatcher_addr: ``host:port`` of the dispatcher; default from config.
        disable_run: only store the dispatch (NEW_OBJECT); start it later with
            ``ct.redispatch(dispatch_id, is_pending=True)()``.

    Returns:
        A function taking the lattice's inputs and returning the new dispatch id (a string),
        as soon as the server has stored the dispatch.

    Raises:
        WorkflowDefinitionError, SerializationError: the workflow cannot be built or pickled.
        Exception: what the lattice function raised while its graph was built, unchanged.
        DispatcherUnavailableError: no server answers at the address.

    Example:
        >>> dispatch_id = ct.dispatch(workflow)(10)   # doctest: +SKIP
    """
    lat = _check_lattice(orig_lattice)

    def wrapper(*args: Any, **kwargs: Any) -> str:
        cfg = client_config(dispatcher_addr)
        dispatch_id = str(uuid.uuid4())
        body = submission_parts(lat, args, kwargs, dispatch_id=dispatch_id,
                                disable_run=disable_run)
        resp = _client.request_json(cfg, "POST", "/dispatches", body=body,
                                    content_type=wire.CONTENT_TYPE)
        # The user's trigger objects now follow what the dispatcher fires for them.
        for trigger, trigger_id in zip(lat.metadata.get("triggers") or [],
                                       resp.get("trigger_ids") or [], strict=False):
            trigger._registered_as(str(trigger_id), dispatcher_addr, str(resp["dispatch_id"]))
        return DispatchId(resp["dispatch_id"], dispatcher_addr)

    return wrapper


def dispatch_sync(lattice: Lattice[Any, Any], dispatcher_addr: str | None = None) -> Callable[..., Result]:
    """Like ``dispatch``, but the wrapper waits and returns the ``Result``."""
    submit = dispatch(lattice, dispatcher_addr)

    def wrapper(*args: Any, **kwargs: Any) -> Result:
        dispatch_id = submit(*args, **kwargs)
        result = get_result(dispatch_id, wait=True, dispatcher_addr=dispatcher_addr)
        assert isinstance(result, Result)
        return result

    return wrapper


def redispatch(dispatch_id: str, dispatcher_addr: str | None = None,
               replace_electrons: dict[str, Callable[..., Any]] | None = None,
               reuse_previous_results: bool = False, is_pending: bool = False) -> Callable[..., str]:
    """Run a stored dispatch again; the wrapper returns the new dispatch id.

    Args:
        dispatch_id: the dispatch to run again.
        replace_electrons: ``{electron name: new electron}``: every node of that name runs the
            new function. A name no electron of the lattice has (a typo, or an electron called
            only inside a sublattice) replaces nothing and is warned about (UserWarning).
        reuse_previous_results: nodes whose function, inputs and parents are unchanged keep
            the old outputs instead of running again.
        is_pending: start the stored (``disable_run=True``) dispatch itself, under its own id.

    Returns:
        A function taking new inputs (none: the old ones) and returning a dispatch id.
    """
    quoted = _check_id(dispatch_id)

    def wrapper(*args: Any, **kwargs: Any) -> str:
        cfg = client_config(dispatcher_addr)
        if is_pending:
            if args or kwargs:  # (Covalent ignores them silently)
                warnings.warn(f"redispatch(is_pending=True) starts {dispatch_id} with the inputs "
                              "it was stored with; the ones given here are ignored (redispatch "
                              "without is_pending runs it again with new inputs)", stacklevel=2)
            resp = _client.request_json(cfg, "POST", f"/dispatches/{quoted}/start")
            if not resp.get("started", True):  # (an older server does not say)
                warnings.warn(f"redispatch(is_pending=True): dispatch {dispatch_id} was started "
                              "already (it is not a stored disable_run dispatch), so nothing "
                              "new runs; redispatch without is_pending runs it again",
                              stacklevel=2)
            return DispatchId(resp["dispatch_id"], dispatcher_addr)
        # Reusing results needs the old dispatch's final outputs: wait for it to end.
        old = get_result(dispatch_id, wait=reuse_previous_results, dispatcher_addr=dispatcher_addr)
        assert isinstance(old, Result)
        lat = old.lattice
        if replace_electrons:
            # Kept on the stored lattice, so a redispatch of this one runs the same functions.
            lat = copy.copy(lat)
            lat.replace_electrons = {**getattr(lat, "replace_electrons", {}), **replace_electrons}
        if not args and not kwargs:
            inputs = old.inputs
            args, kwargs = tuple(inputs.get("args", ())), dict(inputs.get("kwargs", {}))
        new_id = str(uuid.uuid4())
        # As in Covalent, it runs now and registers none of the lattice's triggers again.
        body = submission_parts(lat, args, kwargs, dispatch_id=new_id, disable_run=False,
                                with_triggers=False)
        query = {"redispatch_of": dispatch_id, "reuse": "1" if reuse_previous_results else "0"}
        resp = _client.request_json(cfg, "POST", "/dispatches", body=body,
                                    content_type=wire.CONTENT_TYPE, query=query)
        return DispatchId(resp["dispatch_id"], dispatcher_addr)

    return wrapper


def _replace_functions(graph: WorkflowGraph,
                       replacements: dict[str, Callable[..., Any]]) -> None:
    """Point every node named like a key of ``replacements`` at the new electron's function."""
    from ._electron import Electron

    for name, new in replacements.items():
        if not isinstance(name, str):
            raise TypeError(f"replace_electrons keys are electron names, got {name!r}")
        fn = new.function if isinstance(new, Electron) else new
        if not callable(fn):
            raise TypeError(f"replace_electrons[{name!r}] must be an electron or a function")
        data = dumps(fn, f"the replacement of electron {name!r}")
        blob, digest = graph.add_blob(data), hashlib.sha256(data).hexdigest()
        for node in graph.nodes:
            if node.name == name and node.kind is NodeKind.ELECTRON:
                node.fn, node.fn_hash = blob, digest
    _warn_unmatched(graph, replacements)


def _warn_unmatched(graph: WorkflowGraph, replacements: dict[str, Any]) -> None:
    """Warn about replacement names no electron of the lattice has (Covalent ignores them
    silently: the old function ran and the result looked right)."""
    kinds: dict[NodeKind, set[str]] = {NodeKind.ELECTRON: set(), NodeKind.SUBLATTICE: set()}
    for node in graph.nodes:
        kinds.get(node.kind, set()).add(node.name)
    unmatched = sorted(n for n in replacements if n not in kinds[NodeKind.ELECTRON])
    if not unmatched:
        return
    has = ", ".join(sorted(kinds[NodeKind.ELECTRON])) or "none"
    subs = ", ".join(sorted(kinds[NodeKind.SUBLATTICE]))
    warnings.warn(
        f"replace_electrons: no electron named {', '.join(map(repr, unmatched))} in this lattice, "
        f"so nothing was replaced for it (its electrons: {has}); an electron called inside a "
        f"sublattice{f' ({subs})' if subs else ''} is not replaced this way",
        stacklevel=5)  # the caller of redispatch's wrapper


def stop_triggers(dispatch_ids: str | list[str], triggers_server_addr: str | None = None) -> None:
    """Stop every trigger of the given dispatch id(s); no new dispatch is created afterwards.

    Raises:
        DispatchNotFoundError: an id is unknown.
    """
    ids = [dispatch_ids] if isinstance(dispatch_ids, str) else list(dispatch_ids)
    for i in ids:
        _check_id(i)
    cfg = client_config(triggers_server_addr)
    _client.request_json(cfg, "POST", "/triggers/stop",
                         body=json.dumps({"dispatch_ids": ids}).encode())
