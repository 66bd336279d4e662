"""The server's check of a submitted graph: it refuses exactly the graphs it cannot run."""

from __future__ import annotations

import ast

import networkx as nx
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from covalent.wire import EdgeKind, NodeKind, WorkflowGraph
from dispatcher.compile import validate
from dispatcher.errors import InvalidRequest


def _graph(n: int, edges: list[tuple[int, int]]) -> WorkflowGraph:
    g = WorkflowGraph()
    fn = g.add_blob(b"fn")
    for i in range(n):
        g.add_node(f"n{i}", NodeKind.ELECTRON, fn=fn)
    for src, dst in edges:
        g.add_edge(src, dst, "x", EdgeKind.ARG, 0)
    return g


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 12).flatmap(lambda n: st.tuples(
    st.just(n), st.lists(st.tuples(st.integers(-1, n), st.integers(-1, n)), max_size=30))))
@example((3, [(0, 1), (1, 2), (2, 0)]))  # a cycle through every node
@example((2, [(0, 1), (0, 1), (1, 1)]))  # a repeated edge, then a node feeding itself
@example((4, [(0, 1), (0, 2), (1, 3), (2, 3)]))  # a diamond: acyclic
def test_a_graph_is_refused_exactly_when_an_edge_dangles_or_it_has_a_cycle(
        case: tuple[int, list[tuple[int, int]]]) -> None:
    n, edges = case
    dangling = [(s, d) for s, d in edges if not (0 <= s < n and 0 <= d < n)]
    if dangling:
        with pytest.raises(InvalidRequest, match="names a node that does not exist"):
            validate(_graph(n, edges))
        return
    reference = nx.DiGraph(edges)
    reference.add_nodes_from(range(n))
    if nx.is_directed_acyclic_graph(reference):
        validate(_graph(n, edges))
    else:
        with pytest.raises(InvalidRequest, match="the graph has a cycle: ") as refused:
            validate(_graph(n, edges))
        cycle = ast.literal_eval(str(refused.value).split("cycle: ", 1)[1])  # one cycle's edges
        assert cycle and all(e in edges for e in cycle) and cycle[0][0] == cycle[-1][1]


@pytest.mark.parametrize("index", [-5, 2**76, 1 << 20])
def test_an_edge_to_an_argument_no_call_has_is_refused(index: int) -> None:
    g = _graph(2, [])
    g.add_edge(0, 1, "x", EdgeKind.ARG, index)  # it was run, the argument put who knows where
    with pytest.raises(InvalidRequest, match=f"feeds argument {index}, which no call has"):
        validate(g)
    g.edges[-1] = g.edges[-1]._replace(index=(1 << 20) - 1)
    validate(g)
