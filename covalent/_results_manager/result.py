"""The ``Result`` of a dispatch, as returned by ``ct.get_result``.

A Result holds the records the dispatcher had when it answered (statuses, times, errors,
stdout, stderr) and downloads node outputs lazily: ``get_result`` brings only what the
lattice's result is made of; a node's output is fetched when first read
(``get_node_result(i)["output"]``, ``get_all_node_outputs()``, in one request for all), and the
inputs and the lattice when first asked for. Outputs are unpickled on first access, so a node
whose output needs a module the client lacks only fails when that output is read.

A gathering node (a list, tuple or dict of electron outputs, and the lattice's result) is
stored as nothing but the list of its parts: its value is gathered here from theirs.
"""

from __future__ import annotations

import base64
import json
import warnings
from datetime import datetime
from typing import TYPE_CHECKING, Any

import cloudpickle

from .._transport import TransportableObject
from ..errors import OutputLoadError
from ..wire.gather import arguments, fill_template, gather, template_refs
from ..wire.status import Status

# An output fetched on first use brings the next nodes' small outputs along (in node order, as a
# loop over ``get_node_result`` reads them): one request per this many nodes, not one each.
NEIGHBOURS_MAX = 256
NEIGHBOURS_BYTES = 1 << 20
NEIGHBOUR_SIZE_MAX = 64 << 10

if TYPE_CHECKING:
    from ..config import ClientConfig


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
        self._name = getattr(lattice, "__name__", "")
        self._nodes: list[dict[str, Any]] = []
        self._output_bytes: dict[int, bytes] = {}
        self._parts: dict[str, bytes] = {}  # "inputs", "lattice", "template" once fetched
        self._cache: dict[Any, Any] = {}
        self._dispatcher_addr: str | None = None
        self._cfg: ClientConfig | None = None  # where to fetch what was not sent (None: offline)
        self._intermediate = True  # node outputs may be fetched
        self._workflow_output = True
        self._sublattices = True

    @classmethod
    def _from_wire(cls, header: dict[str, Any], blobs: list[bytes], cfg: ClientConfig | None,
                   dispatcher_addr: str | None = None, *, intermediate_outputs: bool = True,
                   workflow_output: bool = True, sublattice_results: bool = True) -> Result:
        d = header["dispatch"]
        r = cls(None, d["dispatch_id"])
        r._root_dispatch_id = d.get("root_dispatch_id") or d["dispatch_id"]
        r._status = Status(d["status"])
        r._error = d.get("error") or None
        r._start_time = _dt(d.get("start_time"))
        r._end_time = _dt(d.get("end_time"))
        r._results_dir = d.get("results_dir", "")
        r._name = d.get("name") or ""
        r._nodes = header.get("nodes", [])
        for n in r._nodes:
            if n.get("output") is not None:
                r._output_bytes[n["node_id"]] = blobs[n["output"]]
        if header.get("template") is not None:
            r._parts["template"] = blobs[header["template"]]
        r._cfg, r._dispatcher_addr = cfg, dispatcher_addr
        r._intermediate, r._workflow_output = intermediate_outputs, workflow_output
        r._sublattices = sublattice_results
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
        """The dispatched Lattice (fetched and unpickled on first access)."""
        if self._lattice is None and self._cfg is not None:
            self._lattice = self._load(("lattice",), self._part("lattice"))
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
        return TransportableObject(self.result)

    @property
    def result(self) -> Any:
        """The lattice's return value; None until the dispatch COMPLETED.

        Raises:
            OutputLoadError: this client cannot unpickle it (e.g. a module it needs is missing).
        """
        post = self._postprocess_id()
        if (not self._workflow_output or post is None
                or self._nodes[post]["status"] != Status.COMPLETED):
            return None
        try:
            return self._value(post)
        except Exception as exc:  # unpickling runs user code: anything may be raised
            raise OutputLoadError(self._dispatch_id, -1, f"{type(exc).__name__}: {exc}") from exc

    @property
    def inputs(self) -> Inputs:
        """``{"args": (...), "kwargs": {...}}`` the lattice was dispatched with (a dict that
        also answers Covalent's ``get_deserialized()``)."""
        if self._cfg is None and "inputs" not in self._parts:
            return Inputs(args=(), kwargs={})
        inputs = Inputs(self._load(("inputs",), self._part("inputs")))
        inputs["args"] = tuple(inputs.get("args", ()))
        return inputs

    # -- outputs ----------------------------------------------------------------------------

    def _postprocess_id(self) -> int | None:
        if self._nodes and self._nodes[-1]["kind"] == "postprocess":
            return int(self._nodes[-1]["node_id"])
        return None

    def _load(self, key: Any, data: bytes) -> Any:
        if key not in self._cache:
            self._cache[key] = cloudpickle.loads(data)
        return self._cache[key]

    def _output(self, node_id: int) -> Any:
        """A node's output; one this client cannot unpickle is an ``UnloadableOutput`` (with a
        warning), so it does not hide the others."""
        if not self._intermediate and node_id != self._postprocess_id():
            return None
        if ("bad", node_id) in self._cache:
            return self._cache[("bad", node_id)]
        try:
            return self._value(node_id)
        except Exception as exc:  # unpickling runs user code: anything may be raised
            bad = UnloadableOutput(node_id, self._nodes[node_id]["name"], exc)
            warnings.warn(str(bad), RuntimeWarning, stacklevel=3)
            self._cache[("bad", node_id)] = bad  # not the value: a gather of it must still fail
            return bad

    def _value(self, node_id: int) -> Any:
        key = ("node", node_id)
        if key in self._cache:
            return self._cache[key]
        node = self._nodes[node_id]
        spec = _gather_spec(node)
        if spec is not None:
            self._fetch(self._leaves([node_id]))
            values = [self._value(int(p)) if kind != "wait" else None
                      for (kind, _, _), p in zip(spec["layout"], spec["parts"], strict=True)]
            args, kwargs = arguments(tuple(tuple(x) for x in spec["layout"]), values)
            self._cache[key] = gather(spec["kind"], self._gather_extra(spec), args, kwargs)
            return self._cache[key]
        if node_id not in self._output_bytes:
            if not node.get("stored"):
                return None  # it has no output (never ran, failed, cancelled)
            self._fetch(self._with_neighbours(node_id))
        return self._load(key, self._output_bytes[node_id])

    def _gather_extra(self, spec: dict[str, Any]) -> Any:
        if spec["kind"] == "postprocess":
            return self._load(("template",), self._part("template"))
        extra = spec.get("extra")
        return cloudpickle.loads(base64.b64decode(extra)) if extra else None

    def _with_neighbours(self, node_id: int) -> list[int]:
        """``node_id`` and the small stored outputs of the nodes after it, not fetched yet."""
        ids, total = [node_id], 0
        for j in range(node_id + 1, min(len(self._nodes), node_id + 4 * NEIGHBOURS_MAX)):
            n = self._nodes[j]
            size = n.get("size") or 0
            if (not n.get("stored") or j in self._output_bytes or n.get("gather") is not None
                    or size > NEIGHBOUR_SIZE_MAX):
                continue
            if total + size > NEIGHBOURS_BYTES or len(ids) >= NEIGHBOURS_MAX:
                break
            ids.append(j)
            total += size
        return ids

    def _leaves(self, node_ids: list[int]) -> list[int]:
        """The stored outputs these nodes' values are made of (through gathers)."""
        out, stack, seen = [], list(node_ids), set()
        while stack:
            i = stack.pop()
            if i in seen:
                continue
            seen.add(i)
            spec = _gather_spec(self._nodes[i])
            if spec is not None:
                stack.extend(int(p) for p in spec["parts"])
            elif self._nodes[i].get("stored"):
                out.append(i)
        return out

    def _fetch(self, node_ids: list[int]) -> None:
        """Download the outputs not here yet, in one request."""
        missing = [i for i in dict.fromkeys(node_ids) if i not in self._output_bytes]
        if not missing or self._cfg is None:
            return
        from .. import _client
        from ..wire.frame import unpack

        body = json.dumps({"nodes": missing}).encode()
        _, _, data = _client.request(self._cfg, "POST", f"/dispatches/{self._dispatch_id}/outputs",
                                     body=body)
        header, blobs = unpack(data)
        for node_id, index in header["outputs"].items():
            self._output_bytes[int(node_id)] = blobs[index]

    def _part(self, which: str) -> bytes:
        if which not in self._parts:
            if self._cfg is None:
                raise RuntimeError(f"the {which} of dispatch {self._dispatch_id} were not downloaded")
            from .. import _client

            self._parts[which] = _client.request(
                self._cfg, "GET", f"/dispatches/{self._dispatch_id}/{which}")[2]
        return self._parts[which]

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
        if not child or not self._sublattices:
            return None
        key = ("sub", child)
        if key not in self._cache:
            from ..errors import DispatchNotFoundError

            try:
                if self._cfg is not None:  # the same server and token this Result came from
                    from ..api import fetch_result

                    self._cache[key] = fetch_result(self._cfg, child)
                else:
                    from .results_manager import get_result

                    self._cache[key] = get_result(child, dispatcher_addr=self._dispatcher_addr)
            except DispatchNotFoundError:
                # deleted since: a reused node's child belongs to the dispatch it was reused
                # from, which may be gone while its output lives on
                self._cache[key] = None
        return self._cache[key]  # type: ignore[no-any-return]

    def get_all_node_outputs(self) -> dict[str, Any]:
        """``{"<node name>(<node id>)": output}`` for every node (downloaded in one request)."""
        if self._intermediate:
            self._fetch(self._leaves([n["node_id"] for n in self._nodes]))
        return {f"{n['name']}({n['node_id']})": self._output(n["node_id"]) for n in self._nodes}

    def get_all_node_results(self) -> list[dict[str, Any]]:
        """``get_node_result`` of every node, in node id order."""
        if self._intermediate:
            self._fetch(self._leaves([n["node_id"] for n in self._nodes]))
        return [self.get_node_result(n["node_id"]) for n in self._nodes]

    def post_process(self) -> Any:
        """Rebuild the lattice's return value on the client from the stored node outputs.

        Raises RuntimeError if an output it needs was not produced.
        """
        template = self._load(("template",), self._part("template"))
        needed = template_refs(template)
        self._fetch(self._leaves(needed))
        missing = [i for i in needed if self._value(i) is None
                   and self._nodes[i]["status"] != Status.COMPLETED]
        if missing:
            names = ", ".join(f"{self._nodes[i]['name']}({i})" for i in missing)
            raise RuntimeError(f"cannot post-process: nodes {names} have no output "
                               f"(status {self._status})")
        return fill_template(template, {i: self._value(i) for i in needed})

    def __str__(self) -> str:
        lines = [
            "Lattice Result",
            "==============",
            f"lattice: {getattr(self.lattice, '__name__', self.lattice)}",
            f"dispatch_id: {self._dispatch_id}",
            f"status: {self._status}",
            f"result: {self._result_text()}",
        ]
        if self._cfg is not None or "inputs" in self._parts:
            lines += [f"input args: {_short(self.inputs['args'])}",
                      f"input kwargs: {_short(self.inputs['kwargs'])}"]
        lines += [f"start_time: {self._start_time}", f"end_time: {self._end_time}"]
        if self._error:
            lines += ["", "Error", "-----", self._error]
        lines += ["", "Node Outputs", "------------"]
        for n in self._nodes:  # previews, made where the outputs were: nothing is downloaded
            lines.append(f"{n['name']}({n['node_id']}) [{n['status']}]: {n.get('preview') or ''}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<Result {self._dispatch_id} {self._status}>"

    def _repr_html_(self) -> str:
        """How Jupyter shows a Result: status, electron counts, times, a preview of the
        result, the error, and a link to the dispatch's web UI page. Downloads nothing."""
        from .._notebook import counts_by_status, result_html

        return result_html(name=self._name, dispatch_id=self._dispatch_id, status=self._status,
                           counts=counts_by_status(self._nodes), start=self._start_time,
                           end=self._end_time, preview=self._preview(), error=self._error,
                           url=self._cfg.url if self._cfg is not None else None)

    def _preview(self) -> str | None:
        """The result's repr if it is here already, else the preview made on the worker."""
        post = self._postprocess_id()
        if post is None or self._nodes[post]["status"] != Status.COMPLETED:
            return None
        if self._workflow_output and all(i in self._output_bytes for i in self._leaves([post])):
            return self._result_text()
        return self._nodes[post].get("preview")

    def _result_text(self) -> str:
        try:
            return _short(self.result)
        except OutputLoadError as exc:  # str() must not raise
            return f"<cannot be loaded here: {exc.reason}>"

    def __getstate__(self) -> dict[str, Any]:
        """A pickled Result carries what it downloaded (and can fetch the rest while the
        dispatcher answers)."""
        state = dict(self.__dict__)
        state["_cache"] = {}
        return state


def _gather_spec(node: dict[str, Any]) -> dict[str, Any] | None:
    """How a gathering node is made of its parts (None: it is not one). The SDK asks for the
    specs as JSON text (``gathers=text``), parsed here when first needed and kept parsed."""
    spec = node.get("gather")
    if isinstance(spec, str):
        spec = node["gather"] = json.loads(spec)
    return spec


class Inputs(dict[str, Any]):
    """The inputs of a dispatch: a plain dict, as the API reference says. Covalent returns
    them wrapped in a TransportableObject, so scripts written for it call
    ``result.inputs.get_deserialized()``: that answers the same dict."""

    def get_deserialized(self) -> dict[str, Any]:
        return dict(self)


class UnloadableOutput:
    """Stands for a node output this client cannot unpickle (a module missing here, a class
    whose unpickling fails); ``error`` is the exception unpickling raised."""

    def __init__(self, node_id: int, name: str, error: BaseException) -> None:
        self.node_id, self.name, self.error = node_id, name, error

    def __repr__(self) -> str:
        return (f"<the output of node {self.node_id} ({self.name}) cannot be loaded here: "
                f"{type(self.error).__name__}: {self.error}>")

    __str__ = __repr__


def _dt(v: Any) -> datetime | None:
    return datetime.fromisoformat(v) if v else None


def _short(v: Any, limit: int = 300) -> str:
    s = repr(v)
    return s if len(s) <= limit else s[: limit - 3] + "..."
