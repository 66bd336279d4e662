"""DispatchRun keeps its invariants through a dispatch's life (checked after every step)."""

from __future__ import annotations

from covalent.wire import EdgeKind, NodeKind, WorkflowGraph
from dispatcher.compile import compile_graph
from dispatcher.tracking import DispatchRun, Outcome, Role, descendants


def _graph() -> WorkflowGraph:
    """f(p) and g(p) feed a list; total(list); the result gathers total."""
    g = WorkflowGraph()
    f = g.add_node("f", NodeKind.ELECTRON, fn=g.add_blob(b"f"))
    p = g.add_node(":parameter:1", NodeKind.PARAMETER, value=g.add_blob(b"1"))
    h = g.add_node("g", NodeKind.ELECTRON, fn=g.add_blob(b"g"))
    lst = g.add_node(":electron_list:", NodeKind.LIST)
    t = g.add_node("total", NodeKind.ELECTRON, fn=g.add_blob(b"t"))
    post = g.add_node(":postprocess:", NodeKind.POSTPROCESS, value=g.add_blob(b"tpl"))
    g.add_edge(p, f, "x", EdgeKind.ARG, 0)
    g.add_edge(p, h, "x", EdgeKind.ARG, 0)
    g.add_edge(f, lst, "xs", EdgeKind.ARG, 0)
    g.add_edge(h, lst, "xs", EdgeKind.ARG, 1)
    g.add_edge(lst, t, "xs", EdgeKind.ARG, 0)
    g.add_edge(t, post, "node:4", EdgeKind.KWARG, None)
    return g


def _run() -> DispatchRun:
    graph = _graph()
    c = compile_graph("d", graph, {})
    run = DispatchRun.plan("d", graph, c.tasks, c.inlined, c.gathers)
    run.check()
    return run


def test_the_plan_gives_each_node_its_role() -> None:
    run = _run()
    assert [t.role for t in run.nodes] == [Role.TASK, Role.INLINED, Role.TASK, Role.GATHER,
                                          Role.TASK, Role.GATHER]
    assert run.nodes[3].waiting_for == 2 and run.nodes[0].feeds == [3]
    assert descendants(run.graph, [0]) == {0, 3, 4, 5}


def test_sinks_are_the_tasks_nothing_consumes() -> None:
    graph = _graph()
    c = compile_graph("d", graph, {})
    assert c.sinks == [4]  # total feeds only the result (gathered on the server): a sink
    assert [t.args[0].sink for k, t in c.dsk.items()] == [False, False, True]


def test_a_gathering_node_waits_for_every_part() -> None:
    run = _run()
    run.nodes[1].outcome = Outcome.COMPLETED
    run.nodes[0].outcome = Outcome.COMPLETED
    run.nodes[3].waiting_for -= 1
    run.check()
    assert run.nodes[3].waiting_for == 1 and not run.nodes[3].done


def test_a_failed_parent_leaves_its_gathering_child_waiting() -> None:
    run = _run()
    run.nodes[1].outcome = Outcome.COMPLETED
    run.nodes[0].outcome, run.nodes[0].failed = Outcome.FAILED, "ValueError: x"
    run.check()
    assert run.failed == {0: "ValueError: x"} and run.nodes[3].waiting_for == 2
