"""The ``Result`` of a dispatch, as returned by ``ct.get_result``.

A Result is a snapshot of what the dispatcher stored when it answered. Outputs travel as
pickled bytes and are unpickled on first access, so a node whose output needs a module the
client lacks only fails when that output is read.
"""

from __future__ import annotations

import warnings
from datetime import datetime
from typing import Any

import cloudpickle

from ..wire.gather import fill_template, template_refs
from ..wire.status import Status
from .._transport import TransportableObject
from ..errors import OutputLoadError


class Result:
    """Result of one dispatch: status, final result, inputs, error and every node's outcome."""

    NEW_OBJ = Status.NEW_OBJECT
    STARTING = Status.STARTING
    DISPATCHING = Status.DISPATCHING
    RUNNING = Status.RUNNING
    COMPLETED = Status.COMPLETED
    FAILED = Status.FAILED
    CANCELLED = Status.CANCELLED
    POSTPROCESSING = Status.POSTPROCESSING
    PENDING_POSTPROCESSING = Status.PENDING_POSTPROCESSING
    POSTPROCESSING_FAILED = Status.POSTPROCESSING_FAILED
    PENDING_REUSE = Status.PENDING_REUSE

    def __init__(self, lattice: Any, dispatch_id: str = "") -> None:
        self._lattice = lattice
        self._dispatch_id = dispatch_id
        self._root_dispatch_id = dispatch_id
        self._status = Status.NEW_OBJECT
        self._error: str | None = None
        self._start_time: datetime | None = None
        self._end_time: datetime | None = None
        self._results_dir = ""
        self._result_bytes: bytes | None = None
        self._inputs_bytes: bytes | None = None
        self._template_bytes: bytes | None = None
        self._nodes: list[dict[str, Any]] = []
        self._output_bytes: dict[int, bytes] = {}
        self._cache: dict[Any, Any] = {}
        self._dispatcher_addr: str | None = None

    @classmethod
    def _from_wire(cls, header: dict[str, Any], blobs: list[bytes],
                   dispatcher_addr: str | None) -> Result:
        d = header["dispatch"]
        lattice_idx = header.get("lattice")
        lattice = _LazyBlob(blobs[lattice_idx]) if lattice_idx is not None else None
        r = cls(lattice, d["dispatch_id"])
        r._root_dispatch_id = d.get("root_dispatch_id") or d["dispatch_id"]
        r._status = Status(d["status"])
        r._error = d.get("error") or None
        r._start_time = _dt(d.get("start_time"))
        r._end_time = _dt(d.get("end_time"))
        r._results_dir = d.get("results_dir", "")
        r._result_bytes = _blob(blobs, header.get("result"))
        r._inputs_bytes = _blob(blobs, header.get("inputs"))
        r._template_bytes = _blob(blobs, header.get("template"))
        r._nodes = header.get("nodes", [])
        for n in r._nodes:
            if n.get("output") is not None:
                r._output_bytes[n["node_id"]] = blobs[n["output"]]
        r._dispatcher_addr = dispatcher_addr
        return r

    @property
    def dispatch_id(self) -> str:
        """Dispatch id of this dispatch."""
        return self._dispatch_id

    @property
    def root_dispatch_id(self) -> str:
        """Dispatch id of the top dispatch when this one is a sublattice's."""
        return self._root_dispatch_id

    @property
    def status(self) -> Status:
        return self._status

    @property
    def lattice(self) -> Any:
        """The dispatched Lattice (unpickled on first access)."""
        if isinstance(self._lattice, _LazyBlob):
            self._lattice = self._lattice.load()
        return self._lattice

    @property
    def results_dir(self) -> str:
        return self._results_dir

    @property
    def start_time(self) -> datetime | None:
        return self._start_time

    @property
    def end_time(self) -> datetime | None:
        return self._end_time

    @property
    def error(self) -> str | None:
        """Why the dispatch failed: each failed node with its exception; None otherwise."""
        return self._error

    @property
    def encoded_result(self) -> TransportableObject:
        return TransportableObject.from_bytes(
            self._result_bytes if self._result_bytes is not None else cloudpickle.dumps(None)
        )

    @property
    def result(self) -> Any:
        """The lattice's return value; None until the dispatch COMPLETED.

        Raises:
            OutputLoadError: this client cannot unpickle it (e.g. a module it needs is missing).
        """
        if self._result_bytes is None:
            return None
        try:
            return self._load(("result",), self._result_bytes)
        except Exception as exc:  # unpickling runs user code: anything may be raised
            raise OutputLoadError(self._dispatch_id, -1, f"{type(exc).__name__}: {exc}") from exc

    @property
    def inputs(self) -> dict[str, Any]:
        """``{"args": [...], "kwargs": {...}}`` the lattice was dispatched with."""
        if self._inputs_bytes is None:
            return {"args": [], "kwargs": {}}
        return dict(self._load(("inputs",), self._inputs_bytes))

    def _load(self, key: Any, data: bytes) -> Any:
        if key not in self._cache:
            self._cache[key] = cloudpickle.loads(data)
        return self._cache[key]

    def _output(self, node_id: int) -> Any:
        """A node's output; one this client cannot unpickle is an ``UnloadableOutput`` (with a
        warning), so it does not hide the others."""
        data = self._output_bytes.get(node_id)
        if data is None:
            return None
        try:
            return self._load(("node", node_id), data)
        except Exception as exc:  # unpickling runs user code: anything may be raised
            bad = UnloadableOutput(node_id, self._nodes[node_id]["name"], exc)
            warnings.warn(str(bad), RuntimeWarning, stacklevel=3)
            self._cache[("node", node_id)] = bad
            return bad

    def get_node_result(self, node_id: int) -> dict[str, Any]:
        """The outcome of one node: node_id, node_name, start_time, end_time, status, output,
        error, sublattice_result, stdout, stderr.

        Raises:
            KeyError: the dispatch has no such node.
        """
        if not isinstance(node_id, int) or not 0 <= node_id < len(self._nodes):
            raise KeyError(f"dispatch {self._dispatch_id} has no node {node_id!r} "
                           f"(node ids are 0..{len(self._nodes) - 1})")
        n = self._nodes[node_id]
        return {
            "node_id": node_id,
            "node_name": n["name"],
            "start_time": _dt(n.get("start_time")),
            "end_time": _dt(n.get("end_time")),
            "status": Status(n["status"]),
            "output": self._output(node_id),
            "error": n.get("error") or None,
            "sublattice_result": self._sublattice_result(n),
            "stdout": n.get("stdout") or "",
            "stderr": n.get("stderr") or "",
        }

    def _sublattice_result(self, n: dict[str, Any]) -> Result | None:
        child = n.get("sub_dispatch_id")
        if not child:
            return None
        key = ("sub", child)
        if key not in self._cache:
            from .results_manager import get_result

            self._cache[key] = get_result(child, dispatcher_addr=self._dispatcher_addr)
        return self._cache[key]  # type: ignore[no-any-return]

    def get_all_node_outputs(self) -> dict[str, Any]:
        """``{"<node name>(<node id>)": output}`` for every node."""
        return {f"{n['name']}({n['node_id']})": self._output(n["node_id"]) for n in self._nodes}

    def get_all_node_results(self) -> list[dict[str, Any]]:
        """``get_node_result`` of every node, in node id order."""
        return [self.get_node_result(n["node_id"]) for n in self._nodes]

    def post_process(self) -> Any:
        """Rebuild the lattice's return value on the client from the stored node outputs.

        For when the ``:postprocess:`` node could not run on a worker (for example it ran out
        of memory). Raises RuntimeError if an output it needs was not produced.
        """
        if self._template_bytes is None:
            raise RuntimeError(f"dispatch {self._dispatch_id} has no stored return template")
        template = self._load(("template",), self._template_bytes)
        needed = template_refs(template)
        missing = [i for i in needed if i not in self._output_bytes]
        if missing:
            names = ", ".join(f"{self._nodes[i]['name']}({i})" for i in missing)
            raise RuntimeError(f"cannot post-process: nodes {names} have no output "
                               f"(status {self._status})")
        return fill_template(template, {i: self._output(i) for i in needed})

    def __str__(self) -> str:
        lines = [
            "Lattice Result",
            "==============",
            f"lattice: {getattr(self.lattice, '__name__', self.lattice)}",
            f"dispatch_id: {self._dispatch_id}",
            f"status: {self._status}",
            f"result: {self._result_text()}",
        ]
        if self._inputs_bytes is not None:
            lines += [f"input args: {_short(self.inputs['args'])}",
                      f"input kwargs: {_short(self.inputs['kwargs'])}"]
        lines += [f"start_time: {self._start_time}", f"end_time: {self._end_time}"]
        if self._error:
            lines += ["", "Error", "-----", self._error]
        lines += ["", "Node Outputs", "------------"]
        for n in self._nodes:
            out = "<not loaded>"
            try:
                out = _short(self._output(n["node_id"]))
            except Exception as exc:  # an output the client cannot unpickle must not break str()
                out = f"<cannot unpickle: {type(exc).__name__}: {exc}>"
            lines.append(f"{n['name']}({n['node_id']}) [{n['status']}]: {out}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<Result {self._dispatch_id} {self._status}>"

    def _result_text(self) -> str:
        try:
            return _short(self.result)
        except OutputLoadError as exc:  # str() must not raise
            return f"<cannot be loaded here: {exc.reason}>"


class UnloadableOutput:
    """Stands for a node output this client cannot unpickle (a module missing here, a class
    whose unpickling fails); ``error`` is the exception unpickling raised."""

    def __init__(self, node_id: int, name: str, error: BaseException) -> None:
        self.node_id, self.name, self.error = node_id, name, error

    def __repr__(self) -> str:
        return (f"<the output of node {self.node_id} ({self.name}) cannot be loaded here: "
                f"{type(self.error).__name__}: {self.error}>")

    __str__ = __repr__


class _LazyBlob:
    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def load(self) -> Any:
        return cloudpickle.loads(self.data)


def _blob(blobs: list[bytes], idx: Any) -> bytes | None:
    return blobs[idx] if isinstance(idx, int) else None


def _dt(v: Any) -> datetime | None:
    return datetime.fromisoformat(v) if v else None


def _short(v: Any, limit: int = 300) -> str:
    s = repr(v)
    return s if len(s) <= limit else s[: limit - 3] + "..."
