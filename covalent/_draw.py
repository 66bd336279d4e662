"""``lattice.draw(*args, **kwargs)``: build a lattice's graph without running it, and show it.

In a Jupyter notebook the picture appears inline (an SVG drawn from the web UI's layout,
``covalent.layout``; no dispatcher needed). Elsewhere the graph (names, kinds and edges only)
goes to the dispatcher's preview page and its link is printed, as Covalent prints its UI's; if
no dispatcher answers, the SVG is written to a temporary file and its path printed instead.
"""

from __future__ import annotations

import importlib
import json
import sys
import tempfile
from typing import Any

from . import _client
from .config import client_config
from .errors import DispatcherError, DispatcherUnavailableError
from .layout import layout, to_svg
from .wire.graph import WorkflowGraph


def draw(lattice: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Build ``lattice``'s graph for these inputs and show it (see the module docstring)."""
    graph = lattice.build_graph(*args, **kwargs)
    shape = shape_of(graph)
    name = str(lattice.__name__)
    svg = to_svg(layout(shape, show_all=True), name)
    if _in_notebook():
        shown: Any = importlib.import_module("IPython.display")  # there: a kernel runs us
        shown.display(shown.SVG(svg))
        return
    cfg = client_config()
    try:
        made = _client.request_json(cfg, "POST", "/previews",
                                    body=json.dumps({"name": name, "graph": shape}).encode())
    except (DispatcherUnavailableError, DispatcherError) as exc:
        with tempfile.NamedTemporaryFile("w", suffix=".svg", prefix=f"{name[:40]}-",
                                         delete=False) as fh:
            fh.write(svg)
        print(f"No preview from the dispatcher at {cfg.url} ({exc}); the transport graph of the "
              f"lattice is drawn in {fh.name}")
        return
    print(f"To preview the transport graph of the lattice, visit {cfg.url}{made['path']}")


def shape_of(graph: WorkflowGraph) -> dict[str, Any]:
    """What a picture needs of a graph: node ids, names and kinds, and edges."""
    return {"nodes": [{"id": n.id, "name": n.name, "kind": str(n.kind)} for n in graph.nodes],
            "edges": [[e.src, e.dst] for e in graph.edges]}


def _in_notebook() -> bool:
    """Running in a Jupyter kernel (where a displayed SVG is drawn)."""
    if "IPython" not in sys.modules:
        return False
    shell = sys.modules["IPython"].get_ipython()
    return shell is not None and hasattr(shell, "kernel")
