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
