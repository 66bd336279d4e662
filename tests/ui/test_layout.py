"""The graph layout on its own: hidden nodes bridged, layers, fewer crossings, aggregation."""

from __future__ import annotations

import itertools
from typing import Any

from covalent.layout import AGGREGATE_ABOVE, Layout, layout


def _graph(nodes: list[tuple[str, str]], edges: list[tuple[int, int]]) -> dict[str, Any]:
    return {"nodes": [{"id": i, "name": n, "kind": k} for i, (n, k) in enumerate(nodes)],
            "edges": [[s, d, "x", "arg", 0] for s, d in edges]}


def fan_out(n: int) -> dict[str, Any]:
    """``[square(i) for i in range(n)]`` summed by ``total``, as the SDK numbers it."""
    nodes: list[tuple[str, str]] = []
    edges: list[tuple[int, int]] = []
    for i in range(n):
        nodes += [("square", "electron"), (f":parameter:{i}", "parameter")]
        edges.append((2 * i + 1, 2 * i))
    nodes += [(":electron_list:", "list"), ("total", "electron"), (":postprocess:", "postprocess")]
    edges += [(2 * i, 2 * n) for i in range(n)] + [(2 * n, 2 * n + 1), (2 * n + 1, 2 * n + 2)]
    return _graph(nodes, edges)


def crossings(lay: Layout) -> int:
    """Edge crossings between consecutive layers, from the drawn x coordinates."""
    xs = [(lay.items[s].x, lay.items[d].x) for s, d in lay.edges]
    return sum(1 for (a1, b1), (a2, b2) in itertools.combinations(xs, 2) if (a1 - a2) * (b1 - b2) < 0)


def test_hidden_nodes_are_bridged_and_the_toggle_shows_them() -> None:
    lay = layout(fan_out(3))
    assert [i.label for i in lay.items] == ["square"] * 3 + ["total", ":postprocess:"]
    assert len(lay.edges) == 4 and lay.node_item[1] == -1  # the parameter is hidden
    assert {i.layer for i in lay.items if i.label == "square"} == {0}
    full = layout(fan_out(3), show_all=True)
    assert len(full.items) == 3 * 2 + 3 and all(i >= 0 for i in full.node_item)


def test_barycenter_sweeps_remove_avoidable_crossings() -> None:
    # Two chains whose second layer is numbered the other way round: a->d, b->c.
    g = _graph([("a", "electron"), ("b", "electron"), ("c", "electron"), ("d", "electron")],
               [(0, 3), (1, 2)])
    assert crossings(layout(g)) == 0
    # A 3x3 "zipper": id order alone crosses; the sweeps untangle it.
    g = _graph([(n, "electron") for n in "abcxyz"], [(0, 5), (1, 4), (2, 3), (0, 4)])
    assert crossings(layout(g)) == 0


def test_above_the_threshold_one_box_per_name_and_layer_expands_on_request() -> None:
    n = AGGREGATE_ABOVE + 10
    lay = layout(fan_out(n))
    assert lay.aggregated and sorted((i.label, i.members) for i in lay.items) == [
        (":postprocess:", 1), ("square", n), ("total", 1)]
    [box] = [i for i in lay.items if i.members > 1]
    assert box.key == "0:square" and box.node_id is None
    where = lay.items.index(box)
    assert lay.node_item[0] == lay.node_item[2 * (n - 1)] == where  # every member maps to the box
    opened = layout(fan_out(n), expand=[box.key])
    assert len(opened.items) == n + 2 and len(opened.edges) == n + 1
    assert opened.width < 40 * 200 and opened.height > 20 * 30  # a block, not one long line


def test_positions_do_not_overlap() -> None:
    lay = layout(fan_out(100))
    boxes = [(i.x - i.w / 2, i.y - i.h / 2, i.x + i.w / 2, i.y + i.h / 2) for i in lay.items]
    for (a, b) in itertools.combinations(boxes, 2):
        assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


def _hits(a: tuple[float, float], b: tuple[float, float], box: tuple[float, float, float, float]) -> bool:
    """Whether the segment a-b passes through the rectangle (x0, y0, x1, y1) (sampled finely)."""
    x0, y0, x1, y1 = box
    steps = 200
    return any(x0 < a[0] + (b[0] - a[0]) * t / steps < x1 and y0 < a[1] + (b[1] - a[1]) * t / steps < y1
               for t in range(steps + 1))


def crossed(lay: Layout) -> list[tuple[int, int, int]]:
    """(edge from, edge to, item) for every item an edge's drawn line passes through."""
    boxes = [(i.x - i.w / 2, i.y - i.h / 2, i.x + i.w / 2, i.y + i.h / 2) for i in lay.items]
    found = []
    for (s, d), route in zip(lay.edges, lay.routes, strict=True):
        a, b = lay.items[s], lay.items[d]
        line = [(a.x, a.y + a.h / 2), *route, (b.x, b.y - b.h / 2)]
        for k, box in enumerate(boxes):
            if k not in (s, d) and any(_hits(p, q, box) for p, q in zip(line, line[1:])):
                found.append((s, d, k))
    return found


def test_edges_go_around_the_nodes_they_do_not_touch() -> None:
    import random

    # A wrapped fan-out (every square's edge would cross the rows below it), with parameters.
    assert crossed(layout(fan_out(60), show_all=True)) == []
    # Edges that skip layers: a -> b1..b9 -> c -> d, and a -> d past all of them.
    names = [("a", "electron")] + [(f"b{i}", "electron") for i in range(9)] + [("c", "electron"), ("d", "electron")]
    skip = _graph(names, [(0, i) for i in range(1, 10)] + [(i, 10) for i in range(1, 10)] + [(10, 11), (0, 11)])
    assert crossed(layout(skip)) == []
    rng = random.Random(24)
    for _ in range(20):  # random DAGs with wide layers and long edges
        n = rng.randint(10, 60)
        edges = sorted({(rng.randrange(i), i) for i in range(1, n) for _ in range(rng.randint(1, 2))})
        lay = layout(_graph([(f"f{i % 5}", "electron") for i in range(n)], edges))
        assert crossed(lay) == [], edges


def test_the_json_carries_routes_and_items_have_titles() -> None:
    lay = layout(fan_out(60))
    body = lay.to_json()
    routed = [e for e in body["edges"] if len(e) > 2]
    assert routed and all(len(e) % 2 == 0 for e in routed)  # [from, to, x1, y1, ...]
    assert [i.title for i in lay.items][:2] == ["square #0", "square #2"]
