"""Graph building on the client: node ids, names, edges, errors; no server involved."""

from __future__ import annotations

import inspect
import re
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import covalent as ct
from covalent.wire import EdgeKind, NodeKind
from covalent.errors import SerializationError, WorkflowDefinitionError
from tests.tasks import add, identity, multiply


def names(graph):
    return [n.name for n in graph.nodes]


def test_electron_outside_lattice_runs_the_function():
    assert add(2, 3) == 5


def test_lattice_outside_dispatch_runs_the_function():
    @ct.lattice
    def wf(x):
        return multiply(add(x, 1), 2)

    assert wf(3) == 8


def test_node_numbering_follows_covalent():
    @ct.lattice
    def wf(n):
        parts = [add(i, 1) for i in range(2)]
        return add(identity(parts), n)

    g = wf.build_graph(7)
    assert names(g) == [
        "add", ":parameter:0", ":parameter:1",
        "add", ":parameter:1", ":parameter:1",
        "identity", ":electron_list:", "add", ":parameter:7",
        ":postprocess:reconstruct",
    ]
    assert g.nodes[7].kind is NodeKind.LIST
    # the list node collects nodes 0 and 3 in order, and feeds identity's x
    into_list = [(e.src, e.index) for e in g.edges if e.dst == 7]
    assert into_list == [(0, 0), (3, 1)]
    assert [(e.src, e.name) for e in g.edges if e.dst == 6] == [(7, "x")]
    assert [(e.src, e.name) for e in g.edges if e.dst == 8] == [(6, "x"), (9, "y")]


def test_unpacking_indexing_and_attribute_access_record_nodes():
    @ct.electron
    def pair():
        return 1, 2

    @ct.lattice
    def wf():
        a, b = pair()
        c = pair()[1]
        d = pair().real
        return a, b, c, d

    g = wf.build_graph()
    assert names(g) == [
        "pair", ":pair()[0]", ":parameter:0", ":pair()[1]", ":parameter:1",
        "pair", ":pair.__getitem__", ":parameter:1",
        "pair", ":pair.__getattr__", ":parameter:real",
        ":postprocess:reconstruct",
    ]
    assert g.nodes[1].kind is NodeKind.GETITEM and g.nodes[9].kind is NodeKind.GETATTR


def test_dict_argument_and_same_output_twice():
    @ct.lattice
    def wf():
        x = identity(1)
        return add(x, x), identity({"a": x, 2: 5})

    g = wf.build_graph()
    assert [(e.src, e.dst, e.name) for e in g.edges if e.dst == 2] == [(0, 2, "x"), (0, 2, "y")]
    dict_node = next(n for n in g.nodes if n.kind is NodeKind.DICT)
    assert dict_node.name == ":electron_dict:"
    assert [(e.src, e.name, e.index) for e in g.edges if e.dst == dict_node.id] == [
        (0, "a", 0), (dict_node.id + 1, "2", 1)]


def test_wait_adds_a_wait_edge_without_passing_data():
    @ct.lattice
    def wf():
        a = identity(1)
        b = identity(2)
        ct.wait(b, [a])
        return b

    g = wf.build_graph()
    waits = [(e.src, e.dst) for e in g.edges if e.kind is EdgeKind.WAIT]
    assert waits == [(0, 2)]


def test_lattice_inside_lattice_is_inlined_and_sublattice_is_one_node():
    @ct.lattice
    def inner(x):
        return add(x, 1)

    @ct.lattice
    def outer(x):
        return inner(x), ct.electron(inner)(x)

    g = outer.build_graph(1)
    assert names(g)[:3] == ["add", ":parameter:1", ":parameter:1"]
    assert g.nodes[3].name == ":sublattice:inner" and g.nodes[3].kind is NodeKind.SUBLATTICE


@pytest.mark.parametrize("use", [lambda x: [y for y in x], list, tuple, dict])
def test_iterating_an_output_without_unpacking_is_a_clear_error(use):
    # list(x), tuple(x), dict(x): Covalent gives an empty placeholder; a deliberate difference
    @ct.lattice
    def wf():
        return use(identity([1, 2]))

    with pytest.raises(WorkflowDefinitionError, match="cannot iterate over the output of 'identity'"):
        wf.build_graph()


def test_branching_on_an_output_is_a_clear_error():
    @ct.lattice
    def wf():
        return 1 if identity(True) else 2

    with pytest.raises(WorkflowDefinitionError, match="no truth value"):
        wf.build_graph()


@pytest.mark.parametrize("use, what", [
    (int, "int()"), (float, "float()"), (complex, "complex()"), (range, "as an index or count"),
    (lambda x: x > 3, "comparing it (>)"), (lambda x: 3 < x, "comparing it (>)"),
    (lambda x: x <= 3, "comparing it (<=)"),
])
def test_using_an_outputs_value_while_building_is_a_clear_error(use, what):
    # Covalent silently uses a placeholder (0) here; a deliberate difference (README, #12 item 10)
    @ct.lattice
    def wf():
        return use(identity(2))

    with pytest.raises(WorkflowDefinitionError, match=rf"(?s){re.escape(what)}.*'identity'.*does not "
                       r"exist while the lattice is built.*inside an electron.*sublattice"):
        wf.build_graph()
    with pytest.raises(TypeError):
        use(identity)  # an electron that was not called has no value either


def test_power_of_an_output_is_a_node():
    @ct.lattice
    def wf(x):
        return identity(x) ** 3, 2 ** identity(x)

    g = wf.build_graph(2)
    assert [n.name for n in g.nodes if "**" in n.name] == ["identity_**_3", "2_**_identity"]


def test_wrong_arguments_are_reported_at_build_time():
    @ct.lattice
    def wf():
        return add(1)

    with pytest.raises(WorkflowDefinitionError, match="'add' called with wrong arguments"):
        wf.build_graph()


def test_unpicklable_argument_is_a_serialization_error():
    @ct.lattice
    def wf(lock):
        return identity(lock)

    with pytest.raises(SerializationError, match="argument 'x'"):
        wf.build_graph(threading.Lock())


def test_executor_options_are_recorded_on_nodes():
    @ct.electron(executor="local")
    def a():
        return 1

    @ct.electron(executor=ct.executor.DaskExecutor())
    def b():
        return 2

    @ct.lattice(workflow_executor="local")
    def wf():
        return a(), b()

    g = wf.build_graph()
    assert [n.executor for n in g.nodes] == ["local", "dask", "local"]


def test_status_and_documented_paths():
    from covalent._results_manager.result import Result
    from covalent._results_manager.results_manager import cancel
    from covalent._shared_files.util_classes import Status

    assert ct.status.COMPLETED == "COMPLETED" and ct.status.NEW_OBJECT == "NEW_OBJECT"
    assert Result.NEW_OBJ == "NEW_OBJECT" and Result.CANCELLED == "CANCELLED"
    assert Status is ct.Status and cancel is ct.cancel
    assert {s.name for s in Status} >= {
        "NEW_OBJECT", "STARTING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "POSTPROCESSING",
        "PENDING_POSTPROCESSING", "POSTPROCESSING_FAILED", "PENDING_REUSE", "DISPATCHING"}


def test_transportable_object_round_trip():
    t = ct.TransportableObject({"a": [1, 2]})
    assert t.get_deserialized() == {"a": [1, 2]}
    assert ct.TransportableObject.make_transportable(t) is t


def test_dispatching_a_plain_function_is_a_clear_error():
    def not_a_lattice():
        return 1

    with pytest.raises(WorkflowDefinitionError, match="decorate the workflow function"):
        ct.dispatch(not_a_lattice)


def test_an_exception_of_the_lattice_body_reaches_the_caller_as_its_own():
    @ct.lattice
    def bad_workflow(name):
        identity(name)
        raise RuntimeError(f"byebye {name}")

    # Covalent scripts catch the exception they raised (#12 item 6): same type, same message.
    with pytest.raises(RuntimeError) as caught:
        ct.dispatch(bad_workflow, dispatcher_addr="127.0.0.1:9")("z")
    assert type(caught.value) is RuntimeError and str(caught.value) == "byebye z"
    assert caught.value.__notes__ == [
        "raised by lattice 'bad_workflow' while its graph was built (before anything was sent "
        "to the dispatcher)"]


# -- the argument check at build time, model-checked against inspect.Signature.bind ------------

_KINDS = [inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD,
          inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.KEYWORD_ONLY,
          inspect.Parameter.VAR_KEYWORD]


@st.composite
def signatures(draw):
    """A valid Python signature: kinds in order, at most one * and one **, defaults trailing
    among the positional parameters."""
    kinds = sorted(draw(st.lists(st.sampled_from(_KINDS), max_size=6)), key=_KINDS.index)
    kinds = [k for i, k in enumerate(kinds) if k not in (inspect.Parameter.VAR_POSITIONAL,
             inspect.Parameter.VAR_KEYWORD) or k not in kinds[:i]]
    params, defaulted = [], False
    for i, kind in enumerate(kinds):
        default = inspect.Parameter.empty
        if kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            defaulted = defaulted or draw(st.booleans())
            default = 0 if defaulted else default
        elif kind is inspect.Parameter.KEYWORD_ONLY and draw(st.booleans()):
            default = 0
        params.append(inspect.Parameter(f"p{i}", kind, default=default))
    return inspect.Signature(params)


@settings(max_examples=300, deadline=None)
@given(sig=signatures(), n_args=st.integers(0, 7), keywords=st.sets(st.sampled_from(
    ["p0", "p1", "p2", "p3", "other"]), max_size=2), injected=st.sets(st.sampled_from(["p1", "p2"]),
                                                                       max_size=1))
def test_the_build_time_argument_check_refuses_exactly_what_the_call_would(
        sig, n_args, keywords, injected):
    # The check skips Signature.bind for calls by position alone (#23: bind was a third of
    # building a 100,000-node fan-out): it must still refuse exactly what bind refuses.
    def fn(*args, **kwargs):
        return None

    fn.__signature__ = sig
    task = ct.electron(fn)
    args = tuple(range(n_args))
    kwargs = {k: 0 for k in keywords}
    try:
        sig.bind(*args, **{**kwargs, **{k: None for k in injected if k in sig.parameters}})
        expected = None
    except TypeError as exc:
        expected = str(exc)
    hooks = [ct.DepsCall(lambda: 0, retval_keyword=k) for k in injected]

    @ct.lattice
    def wf():
        for _ in range(2):  # the second call is answered from what the first worked out
            (ct.electron(fn, call_before=hooks) if hooks else task)(*args, **kwargs)

    if expected is None:
        wf.build_graph()
    else:
        with pytest.raises(WorkflowDefinitionError, match="called with wrong arguments: " + re.escape(expected)):
            wf.build_graph()


_odd = st.sampled_from([True, None, "1", 1.0, [1], {}])  # what a hand-made body may hold
_edge = st.tuples(st.integers(-2, 3) | _odd, st.integers(0, 3) | _odd,
                  st.text(max_size=3) | st.sampled_from(["\udcff", "x\udc80", "é"]) | _odd,
                  st.sampled_from(["arg", "kwarg", "wait", "bogus", 1]),
                  st.none() | st.integers(0, 3) | _odd)


@settings(max_examples=300, deadline=None)
@given(st.lists(_edge, max_size=4))
def test_edges_from_json_are_checked_as_the_server_reads_them(edges) -> None:
    """``from_json`` takes a well-formed edge as it is and checks any other field by field:
    the edges it builds, or the error it raises, are what checking every field gives."""
    from covalent.wire.graph import _EDGE_KINDS, Edge, WorkflowGraph, _int, _opt_int, _text

    def checked() -> list[Edge]:
        return [Edge(_int(s), _int(d), _text(n), _EDGE_KINDS[k], _opt_int(i))
                for s, d, n, k, i in edges]

    def outcome(fn):
        try:
            return fn()
        except (TypeError, ValueError, KeyError) as exc:
            return type(exc)

    data = {"nodes": [], "edges": [list(e) for e in edges]}
    assert outcome(lambda: WorkflowGraph.from_json(data, []).edges) == outcome(checked)


def _arguments_by_definition(layout: Any, values: list[Any]) -> tuple[list[Any], dict[str, Any]]:
    """What ``wire.arguments`` means, written plainly: positional values sorted by their index
    (an edge without one takes the count of positional edges before it), keywords by name,
    ordering edges dropped."""
    positional: list[tuple[int, int, Any]] = []
    keyword: dict[str, Any] = {}
    for (kind, name, index), value in zip(layout, values, strict=True):
        if kind == "arg":
            positional.append((index if index is not None else len(positional), len(positional), value))
        elif kind == "kwarg":
            keyword[name] = value
    return [v for _, _, v in sorted(positional, key=lambda p: (p[0], p[1]))], keyword


_layout_entry = st.one_of(
    st.tuples(st.just("arg"), st.sampled_from(["x", "xs"]), st.one_of(st.none(), st.integers(0, 6))),
    st.tuples(st.just("kwarg"), st.sampled_from(["k", "m", "n"]), st.none()),
    st.tuples(st.just("wait"), st.just("!waiting_edge"), st.none()))


@given(st.one_of(st.lists(_layout_entry, max_size=8),
                 st.integers(0, 40).map(lambda n: [("arg", "xs", i) for i in range(n)]),
                 st.integers(2, 8).flatmap(lambda n: st.permutations(range(n))).map(
                     lambda order: [("arg", "xs", i) for i in order])))
def test_arguments_are_the_same_on_the_fast_path_and_off_it(layout: list[tuple[str, str, Any]]) -> None:
    # In-order positional layouts (a gathered list) take a shortcut in wire.arguments.
    from covalent.wire import arguments

    layout_t = tuple(layout)
    values = [f"v{i}" for i in range(len(layout_t))]
    assert arguments(layout_t, values) == _arguments_by_definition(layout_t, values)
    with pytest.raises(ValueError):  # one value too few: refused, on either path
        arguments(layout_t + (("arg", "xs", len(layout_t)),), values)
