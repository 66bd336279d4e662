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
  centred, so a fan-out is a block rather than a line no screen can show. The rows of a
  wrapped layer share one grid of columns (its last, shorter row is shifted by whole
  columns), so the gaps between columns run straight down the block.
- **edge routes**: an edge whose straight path would cross rows between its ends (a wrapped
  layer's later rows, or layers it skips) gets waypoints through the gaps of those rows
  (``Layout.routes``), so no edge is drawn through a node it does not touch. A column gap
  free in one row of a wrapped layer is free in all of them, so an edge costs one check
  per layer it crosses, not one per row.
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

import bisect
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


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

    @property
    def title(self) -> str:
        """What tells this item apart from others of the same name (a label, a tooltip).

        >>> Item("n4", "square", "electron", 0, 4, 1).title, Item("0:sq", "sq", "box", 0, None, 9).title
        ('square #4', 'sq ×9')
        """
        return f"{self.label} #{self.node_id}" if self.node_id is not None else f"{self.label} ×{self.members}"


Point = tuple[float, float]


@dataclass(frozen=True, slots=True)
class Layout:
    items: list[Item]
    edges: list[tuple[int, int]]  # (item index, item index), parent first
    node_item: list[int]  # per node id: the index of the item that shows it, -1 if hidden
    aggregated: bool
    width: float
    height: float
    # Per edge, the points its line passes through between its ends (empty: a direct line).
    routes: list[list[Point]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Compact arrays for the browser: items as ``[key, label, kind, x, y, w, h, node, n]``
        (the key only for boxes: what ``expand`` names), edges as ``[from, to, x1, y1, ...]``
        (the points of the edge's route, if it has one)."""
        routes = self.routes or [[] for _ in self.edges]
        return {
            "aggregated": self.aggregated, "width": round(self.width), "height": round(self.height),
            "items": [["" if i.node_id is not None else i.key, i.label, i.kind, round(i.x, 1),
                       round(i.y, 1), i.w, i.h,
                       -1 if i.node_id is None else i.node_id, i.members] for i in self.items],
            "edges": [[s, d, *(round(v) for p in route for v in p)]
                      for (s, d), route in zip(self.edges, routes, strict=True)],
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
    depth = [0] * len(nodes)  # the topological generation: 1 + the deepest parent's
    parents: list[list[int]] = [[] for _ in nodes]
    for s, d in edges:
        parents[d].append(s)
    for n in topological_order(len(nodes), edges):
        for p in parents[n]:
            depth[n] = max(depth[n], depth[p] + 1)
    layer_of = {n: depth[n] for n in shown}
    aggregated = len(shown) > aggregate_above
    items, node_item = _items(shown, names, kinds, layer_of, aggregated, set(expand))
    item_edges = sorted({(node_item[s], node_item[d]) for s, d in edges if node_item[s] != node_item[d]})
    layers = _ordered_layers(items, item_edges)
    placed, rows, width, height = _place(items, layers)
    routes = _routes(placed, rows, item_edges)
    return Layout(placed, item_edges, node_item, aggregated, width, height, routes)


def topological_order(n: int, edges: list[tuple[int, int]]) -> list[int]:
    """Nodes ``0..n-1``, each after its parents (Kahn's algorithm; a plain loop is several
    times faster than building a networkx graph of 20,000 nodes).

    >>> topological_order(4, [(2, 0), (0, 1), (3, 1)])
    [2, 3, 0, 1]
    >>> topological_order(2, [(0, 1), (1, 0)])
    Traceback (most recent call last):
    ...
    ValueError: the graph has a cycle
    """
    children: list[list[int]] = [[] for _ in range(n)]
    waiting = [0] * n
    for s, d in edges:
        children[s].append(d)
        waiting[d] += 1
    order = [i for i in range(n) if not waiting[i]]
    for node in order:  # grows as it goes: each node once its last parent is placed
        for c in children[node]:
            waiting[c] -= 1
            if not waiting[c]:
                order.append(c)
    if len(order) < n:
        raise ValueError("the graph has a cycle")
    return order


def visible_edges(n: int, edges: list[tuple[int, int]], visible: list[bool]) -> list[tuple[int, int]]:
    """Edges between visible nodes, bridging through hidden ones.

    >>> visible_edges(4, [(0, 1), (2, 1), (1, 3)], [True, False, True, True])
    [(0, 3), (2, 3)]
    """
    parents: list[list[int]] = [[] for _ in range(n)]
    for s, d in edges:
        parents[d].append(s)
    reach: dict[int, frozenset[int]] = {}  # hidden node -> its nearest visible ancestors
    out: set[tuple[int, int]] = set()
    for node in topological_order(n, edges):
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


@dataclass(slots=True)
class _Row:
    """One drawn row: its items left to right, its band, and whether its layer's rows share
    one grid of columns (then a gap free here is free in every row of the layer)."""

    items: list[int]
    layer: int
    top: float
    bottom: float
    gridded: bool
    lefts: list[float] = field(default_factory=list)  # items' left edges, for bisect


def _place(items: list[Item], layers: list[list[int]]
           ) -> tuple[list[Item], list[_Row], float, float]:
    """Centre coordinates: each layer in rows of ``row_length`` items, centred; the rows of a
    wrapped layer of equal widths on one grid (its last row shifted by whole columns)."""
    chunks = [(layer, layer[k : k + row_length(len(layer))]) for layer in layers
              for k in range(0, max(len(layer), 1), row_length(len(layer)))]
    width = max((_row_width(items, row) for layer, row in chunks if row == layer[: len(row)]),
                default=0.0)
    placed = list(items)
    rows: list[_Row] = []
    y = 0.0
    gridded_layers = {id(layer) for layer in layers if len(layer) > row_length(len(layer))
                      and len({items[i].w for i in layer}) == 1}
    for layer, row in chunks:
        if not row:
            continue
        layer_no = items[row[0]].layer
        if rows:
            y += GAP_Y if layer_no != rows[-1].layer else ROW_GAP
        h = max(items[i].h for i in row)
        full = layer[: row_length(len(layer))]
        gridded = id(layer) in gridded_layers
        x = (width - _row_width(items, row)) / 2
        if gridded:  # whole columns from the full row's left edge
            slot = items[row[0]].w + GAP_X
            x = (width - _row_width(items, full)) / 2 + (len(full) - len(row)) // 2 * slot
        out = _Row(row, layer_no, y, y + h, gridded)
        for i in row:
            it = items[i]
            placed[i] = Item(it.key, it.label, it.kind, it.layer, it.node_id, it.members,
                             x + it.w / 2, y + h / 2, it.w, it.h)
            out.lefts.append(x)
            x += it.w + GAP_X
        rows.append(out)
        y += h
    return placed, rows, width, y


def _row_width(items: list[Item], row: list[int]) -> float:
    return sum(items[i].w for i in row) + GAP_X * max(len(row) - 1, 0)


def _routes(items: list[Item], rows: list[_Row], edges: list[tuple[int, int]]) -> list[list[Point]]:
    """Per edge, waypoints through the gaps of the rows between its ends (see the module doc)."""
    row_of = {i: r for r, row in enumerate(rows) for i in row.items}
    # Per row, the first row below it of another layer (a gridded layer is crossed at once).
    next_layer = [len(rows)] * len(rows)
    for r in range(len(rows) - 2, -1, -1):
        next_layer[r] = r + 1 if rows[r + 1].layer != rows[r].layer else next_layer[r + 1]
    out: list[list[Point]] = []
    for s, d in edges:
        r, end = row_of[s] + 1, row_of[d]
        if r >= end:
            out.append([])
            continue
        x, target = items[s].x, items[d].x
        points: list[Point] = []
        while r < end:
            last = min(next_layer[r], end) - 1 if rows[r].gridded else r
            free = _free_x(items, rows[r], x, target)
            above = (rows[r - 1].bottom + rows[r].top) / 2
            below = (rows[last].bottom + rows[last + 1].top) / 2
            if free != x:  # across the band above the row, to a free column, then down it
                points += [(free, above), (free, below)]
            elif points:  # straight on down the same column
                points[-1] = (free, below)
            else:  # straight down from the parent, not across the rows on a diagonal
                points.append((free, below))
            x, r = free, last + 1
        out.append(points)
    return out


def _free_x(items: list[Item], row: _Row, x: float, target: float, pad: float = 4.0) -> float:
    """``x`` if a line at ``x`` misses every item of ``row``; else the middle of the nearest
    gap beside the item it would hit, on the side of ``target``."""
    k = bisect.bisect_right(row.lefts, x) - 1
    if k < 0:
        return x if x < row.lefts[0] - pad else row.lefts[0] - GAP_X / 2
    it = items[row.items[k]]
    left, right = it.x - it.w / 2, it.x + it.w / 2
    if x > right + pad and (k + 1 >= len(row.lefts) or x < row.lefts[k + 1] - pad):
        return x
    before, after = left - GAP_X / 2, right + GAP_X / 2
    if x > right:  # in a gap too narrow for the line and its padding: the gap's middle
        return after
    return before if abs(before - target) < abs(after - target) else after



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
    routes = lay.routes or [[] for _ in lay.edges]
    for (s, d), route in zip(lay.edges, routes, strict=True):
        a, b = lay.items[s], lay.items[d]
        points = [(a.x, a.y + a.h / 2), *route, (b.x, b.y - b.h / 2)]  # around other nodes
        path = " L".join(f"{x + SVG_PAD:.1f},{y + SVG_PAD:.1f}" for x, y in points)
        out.append(f'<path d="M{path}"/>')
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
