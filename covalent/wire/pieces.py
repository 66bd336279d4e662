"""JSON read and written element by element near the top, for large frame headers.

``json.loads`` and ``json.dumps`` run as one C call each: on the 51 MiB header of a
100,000-node dispatch that holds the GIL for up to a second, and a server doing it in a thread
stops answering meanwhile. These do the same work with the outer objects and arrays (to
``depth``) walked in Python and their members handed to the C codec one (parsing) or a slice
(encoding) at a time, so the interpreter can switch threads between calls. Same values, same
errors (``ValueError``) as the stdlib for what they accept.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from typing import Any

_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")
_COMPACT = json.JSONEncoder(separators=(",", ":"))
SLICE = 32  # list members encoded per C call (a node's record: well under a kilobyte)


def loads(text: str, depth: int = 3) -> Any:
    """``json.loads(text)``, with objects and arrays down to ``depth`` levels parsed per member."""
    value, end = _value(text, _SPACE.match(text, 0).end(), depth)  # type: ignore[union-attr]
    end = _SPACE.match(text, end).end()  # type: ignore[union-attr]
    if end != len(text):
        raise ValueError(f"Extra data: char {end}")
    return value


def loads_members(text: str, names: Collection[str], depth: int = 3
                  ) -> tuple[Any, dict[str, str]]:
    """``loads(text, depth)``, and the JSON text of the members ``names`` of the top-level
    object as they were written (the server stores a submitted graph so, never encoding it
    again: a second or more for 100,000 nodes, #23).

    >>> loads_members('{"a": [1, 2], "b": {"c": 3}}', ["b"], depth=1)
    ({'a': [1, 2], 'b': {'c': 3}}, {'b': '{"c": 3}'})
    """
    start = _SPACE.match(text, 0).end()  # type: ignore[union-attr]
    spans: dict[str, tuple[int, int]] = {}
    if depth > 0 and text.startswith("{", start):
        value, end = _object(text, start + 1, depth - 1, spans)
    else:
        value, end = _value(text, start, depth)
    end = _SPACE.match(text, end).end()  # type: ignore[union-attr]
    if end != len(text):
        raise ValueError(f"Extra data: char {end}")
    return value, {k: text[a:b] for k, (a, b) in spans.items() if k in names}


def dumps(value: Any, depth: int = 3) -> str:
    """``json.dumps(value, separators=(",", ":"))``, with dicts down to ``depth`` levels
    encoded per member and lists in slices of ``SLICE`` members per C call (a call per member
    cost more than the encoding itself: a 100,000-node graph is 100,000 small records, #23).

    >>> v = {"a": [{"b": i, "c": [i]} for i in range(100)], "d": {"e": [1, 2]}}
    >>> dumps(v) == json.dumps(v, separators=(",", ":"))
    True
    """
    if depth > 0 and type(value) is dict and all(type(k) is str for k in value):
        return "{" + ",".join(_COMPACT.encode(k) + ":" + dumps(v, depth - 1)
                              for k, v in value.items()) + "}"
    if depth > 0 and type(value) is list and len(value) > SLICE:
        return "[" + ",".join(_COMPACT.encode(value[i:i + SLICE])[1:-1]
                              for i in range(0, len(value), SLICE)) + "]"
    return _COMPACT.encode(value)


def _value(s: str, i: int, depth: int) -> tuple[Any, int]:
    if depth > 0 and i < len(s):
        if s[i] == "{":
            return _object(s, i + 1, depth - 1)
        if s[i] == "[":
            return _array(s, i + 1, depth - 1)
    try:
        value, end = _DECODER.raw_decode(s, i)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{exc.msg}: char {exc.pos}") from None
    return value, end


def _skip(s: str, i: int) -> int:
    return _SPACE.match(s, i).end()  # type: ignore[union-attr]


def _object(s: str, i: int, depth: int, spans: dict[str, tuple[int, int]] | None = None
            ) -> tuple[dict[str, Any], int]:
    """An object's members from ``i`` (past its ``{``); ``spans``: where each member's value
    starts and ends."""
    out: dict[str, Any] = {}
    i = _skip(s, i)
    if s.startswith("}", i):
        return out, i + 1
    while True:
        if not s.startswith('"', i):
            raise ValueError(f"Expecting property name enclosed in double quotes: char {i}")
        key, i = _value(s, i, 0)
        i = _skip(s, i)
        if not s.startswith(":", i):
            raise ValueError(f"Expecting ':' delimiter: char {i}")
        start = _skip(s, i + 1)
        out[key], i = _value(s, start, depth)
        if spans is not None:
            spans[key] = (start, i)
        i, closed = _after_member(s, i, "}")
        if closed:
            return out, i


def _array(s: str, i: int, depth: int) -> tuple[list[Any], int]:
    out: list[Any] = []
    i = _skip(s, i)
    if s.startswith("]", i):
        return out, i + 1
    while True:
        item, i = _value(s, i, depth)
        out.append(item)
        i, closed = _after_member(s, i, "]")
        if closed:
            return out, i


def _after_member(s: str, i: int, close: str) -> tuple[int, bool]:
    """Past a member: (where the next one starts, False) after a comma, (past ``close``, True)."""
    i = _skip(s, i)
    if s.startswith(",", i):
        return _skip(s, i + 1), False
    if s.startswith(close, i):
        return i + 1, True
    raise ValueError(f"Expecting ',' delimiter: char {i}")
