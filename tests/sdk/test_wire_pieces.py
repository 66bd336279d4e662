"""covalent.wire.pieces reads and writes exactly what the json module does, a member at a time."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from covalent.wire import pieces

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                      | st.dictionaries(st.text(max_size=5), inner, max_size=5), max_leaves=30)


def _outcome(parse: Any, text: str) -> tuple[str, Any]:
    try:
        return "ok", parse(text)
    except ValueError:
        return "error", None


@settings(max_examples=300, deadline=None)
@given(values, st.sampled_from([0, 1, 2, 3, 5]))
def test_the_same_text_and_values_as_json(value: Any, depth: int) -> None:
    text = json.dumps(value, separators=(",", ":"))
    assert pieces.dumps(value, depth) == text
    assert pieces.loads(text, depth) == json.loads(text)
    spaced = json.dumps(value, indent=2)  # whitespace wherever JSON allows it
    assert pieces.loads(spaced, depth) == json.loads(spaced)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet='{}[]:,"ab1 .-e\n', max_size=30))
def test_text_json_refuses_is_refused(text: str) -> None:
    assert _outcome(pieces.loads, text)[0] == _outcome(json.loads, text)[0]


@pytest.mark.parametrize("text", ['{"a":1,}', "[1,2", '{"a" 1}', '{"a":1} x', "[1 2]", "{1:2}", "",
                                  '{"a":[1,]}', "\ufeff{}"])
def test_malformed_text_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        pieces.loads(text)


def test_a_graph_header_round_trips_with_non_string_keys_and_nan() -> None:
    header = {"graph": {"nodes": [{"id": i, "name": f"n{i}", "metadata": {1: "x"}} for i in range(5)],
                        "edges": [[0, 1, {"param": "x"}]]}, "blob_sizes": [1, 2], "x": math.inf}
    text = pieces.dumps(header)
    assert text == json.dumps(header, separators=(",", ":"))
    assert pieces.loads(text) == json.loads(text)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=5), values, max_size=6), st.sampled_from([1, 2, 3]),
       st.booleans())
def test_members_are_kept_as_written(value: dict[str, Any], depth: int, spaced: bool) -> None:
    """What the server stores of a submitted graph is the text the client sent for it: it
    parses to the member's value, and compact text is kept byte for byte."""
    text = json.dumps(value, indent=2) if spaced else json.dumps(value, separators=(",", ":"))
    parsed, kept = pieces.loads_members(text, list(value)[:3], depth)
    assert parsed == json.loads(text)
    assert set(kept) == set(list(value)[:3])
    for name, member in kept.items():
        assert json.loads(member) == value[name]
        if not spaced:
            assert member == json.dumps(value[name], separators=(",", ":"))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet='{}[]:,"ab1 .-e\n', max_size=30))
def test_members_of_text_json_refuses_are_refused(text: str) -> None:
    assert (_outcome(lambda t: pieces.loads_members(t, ["a"], 1), text)[0]
            == _outcome(json.loads, text)[0])


def test_the_sdk_sends_a_graph_as_the_server_would_encode_it() -> None:
    """The server stores the graph's JSON as the SDK sent it instead of encoding the parsed
    graph again: for what this SDK sends, the two are the same text (a workflow with lists,
    dicts, keyword arguments, deps, hooks and a sublattice)."""
    import covalent as ct
    from covalent import wire
    from covalent.api import submission_parts
    from dispatcher.dispatches import parse_submission
    from dispatcher.upload import Upload

    @ct.electron
    def add(x: int, y: int = 2) -> int:
        return x + y

    @ct.electron(deps_pip=ct.DepsPip(packages=["numpy"]), call_before=[ct.DepsCall(print, args=[1])])
    def total(xs: list[int], d: dict[str, int]) -> int:
        return sum(xs) + sum(d.values())

    @ct.electron
    @ct.lattice
    def sub(x: int) -> int:
        return add(x, 3)

    @ct.lattice(executor="dask")
    def wf(x: int, name: str = "n") -> Any:
        r = [add(i) for i in range(3)]
        return total(r, {"k": add(x, y=4)}), sub(x), r[0]

    body = b"".join(submission_parts(wf, (1,), {"name": "x"}, disable_run=False,
                                     dispatch_id="3f0c9a52-3c1e-4f5e-8f77-2f1d7c3b8a11"))
    end = 8 + wire.header_length(body[:8])
    header, sizes, kept = wire.parse_header_keeping(body[8:end], ("graph",))
    blobs = []
    for size in sizes:
        blobs.append(body[end:end + size])
        end += size
    _, graph = parse_submission(Upload(header, blobs))
    assert len(graph.nodes) > 10
    assert kept["graph"] == pieces.dumps(graph.to_json())
