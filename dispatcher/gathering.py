"""Record a gathering node (a list, tuple or dict of outputs, or the lattice's result) as the
list of its parts: no bytes, since every part is stored already, and a preview made of the
parts' previews (the server never unpickles a value)."""

from __future__ import annotations

import base64
import json
import operator
import re
from collections.abc import Mapping, Sequence
from typing import Any

from covalent.wire import Edge, EdgeKind, NodeKind, WorkflowGraph, shorten

from . import state

_PART = re.compile("⟨([0-9]+)⟩")  # the i-th part in a postprocess template

_SRC = operator.itemgetter(0)  # an edge's source
_LAYOUT = operator.itemgetter(3, 2, 4)  # an edge's kind, name and index


def gather_update(dispatch_id: str, graph: WorkflowGraph, node_id: int, edges: Sequence[Edge],
                  previews: Mapping[int, str], stamp: str) -> tuple[state.NodeUpdate, str]:
    """The COMPLETED record of gathering node ``node_id`` (``edges``: its incoming edges) and
    its preview."""
    node = graph.nodes[node_id]
    # An edge's (kind, name, index) as a tuple: JSON writes it as the same list, and an
    # EdgeKind as its string (a StrEnum); a square's 1,024 lists were 26 us each, half of
    # it reading ``kind.value`` per edge (#23).
    spec: dict[str, Any] = {"kind": str(node.kind), "parts": list(map(_SRC, edges)),
                            "layout": list(map(_LAYOUT, edges))}
    if node.kind in (NodeKind.DICT, NodeKind.TUPLE) and node.value is not None:
        # the keys, or the namedtuple's type (small), pickled
        spec["extra"] = base64.b64encode(graph.blobs[node.value]).decode()
    args = [e for e in edges if e.kind != EdgeKind.WAIT]
    shown = [previews.get(e.src, "") for e in args]
    if node.kind is not NodeKind.POSTPROCESS:  # argument order (edge order may differ)
        order = [e.index or 0 for e in args]
        if any(a > b for a, b in zip(order, order[1:])):
            shown = [p for _, p in sorted(zip(order, shown, strict=True))]
    text = gather_preview(str(node.kind), node.metadata, shown)
    return state.node_gathered(dispatch_id, node_id, json.dumps(spec), stamp, text), text


def gather_preview(kind: str, metadata: dict[str, Any], previews: list[str],
                   limit: int = 200) -> str:
    """The preview of a gathering node, from its parts' previews, in argument order; a dict's
    keys and the result's shape come from the SDK (``metadata["keys"]``,
    ``metadata["template"]`` with ``⟨i⟩`` for the i-th part).

    >>> gather_preview("list", {}, ["1", "'a'"])
    "[1, 'a']"
    >>> gather_preview("postprocess", {"template": "{'total': ⟨0⟩}"}, ["55"])
    "{'total': 55}"
    >>> gather_preview("postprocess", {"template": "[⟨0⟩, ⟨1⟩]"}, ["'⟨1⟩'", "2"])
    "['⟨1⟩', 2]"
    """
    if kind == "dict":
        keys = metadata.get("keys") or ["?"] * len(previews)
        text = "{" + ", ".join(f"{k}: {v}" for k, v in zip(keys, previews, strict=False)) + "}"
    elif kind == "postprocess" and isinstance(metadata.get("template"), str):
        # One pass: a replace per part rescanned the whole text each time (a lattice that
        # returns 10,000 outputs held the event loop 20 s), and substituted into parts
        # already put in.
        def part(m: re.Match[str]) -> str:
            i = int(m.group(1))
            return previews[i] if i < len(previews) else m.group(0)
        text = _PART.sub(part, metadata["template"])
    elif kind == "tuple":
        text = "(" + ", ".join(previews) + ("," if len(previews) == 1 else "") + ")"
    else:
        text = "[" + ", ".join(previews) + "]"
    return shorten(text, limit)  # cut between items, never inside a number (#24)
