"""Lay out a workflow graph for people: the web UI and `lattice.draw` draw these coordinates.

Model (issue #15), pure functions of the stored graph (statuses are not part of a layout, so
a layout is computed once per dispatch and view, and live updates only recolour it):

- **visible nodes**: parameter and plumbing nodes (``HIDDEN_KINDS``: parameters, the lists,
  tuples and dicts that gather outputs, item and attribute access) are hidden unless
  ``show_all``; edges bridge through them, so ``a -> :electron_list: -> b`` draws ``a -> b``.
- **layers**: the topological generations of the visible graph (networkx).
- **order** inside a layer: barycenter sweeps (down, then up, ``SWEEPS`` times, then down),
  the classic crossing-reduction heuristic: each item moves to the mean position of its
  neighbours in the layers already placed.
- **coordinates**: a wide layer wraps into rows (about sqrt(3 n) items, at most ``WRAP``),
  each row centred, so a fan-out is a block rather than a line no screen can show.
- **aggregation**: above ``AGGREGATE_ABOVE`` visible nodes, one box per electron name and
  layer (with its member count; the browser colours it by its members' statuses); a box named
  in ``expand`` is drawn as its member nodes instead. A box of one node is that node.

>>> g = {"nodes": [{"id": 0, "name": "add", "kind": "electron"},
...                {"id": 1, "name": ":parameter:1", "kind": "parameter"},
...                {"id": 2, "name": "total", "kind": "electron"}],
...      "edges": [[1, 0, "x", "arg", 0], [0, 2, "y", "arg", 0]]}
>>> lay = layout(g)
>>> [(i.label, i.layer) for i in lay.items], lay.edges, lay.node_item
([('add', 0), ('total', 1)], [(0, 1)], [0, -1, 1])
>>> [(i.label, i.layer) for i in layout(g, show_all=True).items]
[('add', 1), (':parameter:1', 0), ('total', 2)]
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import networkx as nx

HIDDEN_KINDS = frozenset({"parameter", "list", "tuple", "dict", "getitem", "getattr"})
AGGREGATE_ABOVE = 2000
WRAP = 40  # at most this many items per row: a wide layer wraps
SWEEPS = 2
NODE_W, NODE_H, BOX_W, BOX_H = 150.0, 30.0, 190.0, 46.0
GAP_X, GAP_Y, ROW_GAP = 24.0, 70.0, 22.0


@dataclass(frozen=True, slots=True)
class Item:
    """One drawn thing: a node (``node_id``) or a box of ``members`` nodes (``node_id`` None)."""

    key: str
    label: str
    kind: str
    layer: int
    node_id: int | None
    members: int
    x: float = 0.0  # centre
    y: float = 0.0
    w: float = NODE_W
    h: float = NODE_H


@dataclass(frozen=True, slots=True)
class Layout:
    items: list[Item]
    edges: list[tuple[int, int]]  # (item index, item index), parent first
    node_item: list[int]  # per node id: the index of the item that shows it, -1 if hidden
    aggregated: bool
    width: float
    height: float

    def to_json(self) -> dict[str, Any]:
        """Compact arrays for the browser: items as ``[key, label, kind, x, y, w, h, node, n]``."""
        return {
            "aggregated": self.aggregated, "width": round(self.width), "height": round(self.height),
            "items": [[i.key, i.label, i.kind, round(i.x, 1), round(i.y, 1), i.w, i.h,
                       -1 if i.node_id is None else i.node_id, i.members] for i in self.items],
            "edges": [list(e) for e in self.edges],
            "node_item": self.node_item,
        }


def box_key(layer: int, name: str) -> str:
    """The key of the box of nodes called ``name`` in ``layer`` (what ``expand`` names)."""
    return f"{layer}:{name}"


def display_name(name: str) -> str:
    """How a node is labelled.

    >>> display_name(":sublattice:child"), display_name("add")
    ('child', 'add')
    """
    return name.removeprefix(":sublattice:")


def layout(graph: dict[str, Any], show_all: bool = False, expand: Iterable[str] = (),
           aggregate_above: int = AGGREGATE_ABOVE) -> Layout:
    """The layout of a stored graph (``DispatchRecord.graph``) for one view of it."""
    nodes = graph["nodes"]
    kinds = [str(n["kind"]) for n in nodes]
    names = [str(n["name"]) for n in nodes]
    visible = [show_all or k not in HIDDEN_KINDS for k in kinds]
    edges = visible_edges(len(nodes), [(int(e[0]), int(e[1])) for e in graph["edges"]], visible)
    shown = [i for i in range(len(nodes)) if visible[i]]
    dag: nx.DiGraph[int] = nx.DiGraph()
    dag.add_nodes_from(shown)
    dag.add_edges_from(edges)
    layer_of: dict[int, int] = {}
    for depth, generation in enumerate(nx.topological_generations(dag)):
        for n in generation:
            layer_of[n] = depth
    aggregated = len(shown) > aggregate_above
    items, node_item = _items(shown, names, kinds, layer_of, aggregated, set(expand))
    item_edges = sorted({(node_item[s], node_item[d]) for s, d in edges if node_item[s] != node_item[d]})
    layers = _ordered_layers(items, item_edges)
    placed, width, height = _place(items, layers)
    return Layout(placed, item_edges, node_item, aggregated, width, height)


def visible_edges(n: int, edges: list[tuple[int, int]], visible: list[bool]) -> list[tuple[int, int]]:
    """Edges between visible nodes, bridging through hidden ones.

    >>> visible_edges(4, [(0, 1), (2, 1), (1, 3)], [True, False, True, True])
    [(0, 3), (2, 3)]
    """
    parents: list[list[int]] = [[] for _ in range(n)]
    full: nx.DiGraph[int] = nx.DiGraph()
    full.add_nodes_from(range(n))
    for s, d in edges:
        parents[d].append(s)
        full.add_edge(s, d)
    reach: dict[int, frozenset[int]] = {}  # hidden node -> its nearest visible ancestors
    out: set[tuple[int, int]] = set()
    for node in nx.topological_sort(full):
        found: set[int] = set()
        for p in parents[node]:
            if visible[p]:
                found.add(p)
            else:
                found |= reach[p]
        if visible[node]:
            out.update((p, node) for p in found)
        else:
            reach[node] = frozenset(found)
    return sorted(out)


def _items(shown: list[int], names: list[str], kinds: list[str], layer_of: dict[int, int],
           aggregated: bool, expand: set[str]) -> tuple[list[Item], list[int]]:
    node_item = [-1] * len(names)
    items: list[Item] = []
    groups: dict[str, list[int]] = defaultdict(list)
    for n in shown:
        key = box_key(layer_of[n], names[n])
        if aggregated and key not in expand:
            groups[key].append(n)
        else:
            node_item[n] = len(items)
            items.append(Item(f"n{n}", display_name(names[n]), kinds[n], layer_of[n], n, 1))
    for key, members in groups.items():
        first = members[0]
        for n in members:
            node_item[n] = len(items)
        if len(members) == 1:
            items.append(Item(f"n{first}", display_name(names[first]), kinds[first],
                              layer_of[first], first, 1))
        else:
            items.append(Item(key, display_name(names[first]), "box", layer_of[first], None,
                              len(members), w=BOX_W, h=BOX_H))
    return items, node_item


def _ordered_layers(items: list[Item], edges: list[tuple[int, int]]) -> list[list[int]]:
    """Item indices per layer, ordered by barycenter sweeps to reduce edge crossings."""
    first_node = [i.node_id if i.node_id is not None else int(1e12) for i in items]
    layers: list[list[int]] = [[] for _ in range(1 + max((i.layer for i in items), default=-1))]
    for idx in sorted(range(len(items)), key=lambda i: (first_node[i], items[i].key)):
        layers[items[idx].layer].append(idx)
    up: list[list[int]] = [[] for _ in items]
    down: list[list[int]] = [[] for _ in items]
    for s, d in edges:
        down[s].append(d)
        up[d].append(s)
    pos = [0.0] * len(items)

    def place(layer: list[int]) -> None:
        span = max(len(layer) - 1, 1)
        for k, idx in enumerate(layer):
            pos[idx] = k / span

    def sweep(order: Iterable[int], neighbours: list[list[int]]) -> None:
        for li in order:
            layer = layers[li]
            keys = {idx: (sum(pos[n] for n in neighbours[idx]) / len(neighbours[idx])
                          if neighbours[idx] else pos[idx]) for idx in layer}
            layer.sort(key=keys.__getitem__)  # stable: ties keep their order
            place(layer)

    for layer in layers:
        place(layer)
    for _ in range(SWEEPS):
        sweep(range(1, len(layers)), up)
        sweep(range(len(layers) - 2, -1, -1), down)
    sweep(range(1, len(layers)), up)
    return layers


def row_length(n: int) -> int:
    """How many of a layer's ``n`` items go in one row.

    >>> row_length(5), row_length(30), row_length(10_000)
    (8, 10, 40)
    """
    return min(WRAP, max(8, math.ceil(math.sqrt(3 * n))))


def _place(items: list[Item], layers: list[list[int]]) -> tuple[list[Item], float, float]:
    """Centre coordinates: each layer in rows of ``row_length`` items, each row centred."""
    rows = [layer[k : k + row_length(len(layer))] for layer in layers
            for k in range(0, max(len(layer), 1), row_length(len(layer)))]
    row_width = [sum(items[i].w for i in row) + GAP_X * max(len(row) - 1, 0) for row in rows]
    width = max(row_width, default=0.0)
    placed = list(items)
    y = 0.0
    last_layer = -1
    for row, rw in zip(rows, row_width, strict=True):
        if not row:
            continue
        layer = items[row[0]].layer
        if last_layer >= 0:
            y += GAP_Y if layer != last_layer else ROW_GAP
        h = max(items[i].h for i in row)
        x = (width - rw) / 2
        for i in row:
            it = items[i]
            placed[i] = Item(it.key, it.label, it.kind, it.layer, it.node_id, it.members,
                             x + it.w / 2, y + h / 2, it.w, it.h)
            x += it.w + GAP_X
        y += h
        last_layer = layer
    return placed, width, y


SVG_PAD = 16.0
_FILL = {"electron": "#e8f0fe", "sublattice": "#f3e8fd", "postprocess": "#e6f4ea",
         "parameter": "#f1f3f4", "box": "#fef7e0"}


def to_svg(lay: Layout, title: str = "") -> str:
    """The layout as a standalone SVG picture (``lattice.draw`` in a notebook and its preview
    page). Every name is XML-escaped: a node called ``<script>`` is text, never markup.

    >>> g = {"nodes": [{"id": 0, "name": "a<b", "kind": "electron"}], "edges": []}
    >>> svg = to_svg(layout(g), "wf & co")
    >>> "a&lt;b" in svg and "<title>wf &amp; co</title>" in svg and "a<b" not in svg
    True
    """
    from html import escape

    width, height = lay.width + 2 * SVG_PAD, lay.height + 2 * SVG_PAD
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
           f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="sans-serif" font-size="12">']
    if title:
        out.append(f"<title>{escape(title)}</title>")
    out.append('<g stroke="#9aa0a6" stroke-width="1.2" fill="none">')
    for s, d in lay.edges:
        a, b = lay.items[s], lay.items[d]
        x1, y1, x2, y2 = (a.x + SVG_PAD, a.y + a.h / 2 + SVG_PAD, b.x + SVG_PAD,
                          b.y - b.h / 2 + SVG_PAD)
        mid = (y1 + y2) / 2
        out.append(f'<path d="M{x1:.1f},{y1:.1f} C{x1:.1f},{mid:.1f} {x2:.1f},{mid:.1f} '
                   f'{x2:.1f},{y2:.1f}"/>')
    out.append("</g>")
    for it in lay.items:
        label = it.label if it.members == 1 else f"{it.label} ×{it.members}"
        shown = label if len(label) <= 24 else label[:23] + "…"
        x, y = it.x - it.w / 2 + SVG_PAD, it.y - it.h / 2 + SVG_PAD
        out.append(f'<g class="node {escape(it.kind)}"><title>{escape(label)}</title>'
                   f'<rect x="{x:.1f}" y="{y:.1f}" width="{it.w:.0f}" height="{it.h:.0f}" rx="6" '
                   f'fill="{_FILL.get(it.kind, "#ffffff")}" stroke="#5f6368"/>'
                   f'<text x="{it.x + SVG_PAD:.1f}" y="{it.y + SVG_PAD + 4:.1f}" '
                   f'text-anchor="middle">{escape(shown)}</text></g>')
    out.append("</svg>")
    return "".join(out)
