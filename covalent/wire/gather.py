"""Gathering nodes: lists, tuples, dicts and the lattice's result, made of other nodes' outputs.

An ``:electron_list:`` node, an ``:electron_dict:`` node or the ``:postprocess:reconstruct`` node computes
nothing of its own: it *gathers* its parents' outputs. Such a node needs no Dask task: a
consumer on a worker gathers it in place (``gather``), and the dispatcher records its output
as a small pickle that gathers the parents' pickled outputs when it is loaded
(``gathered_bytes``). Making that pickle needs only the parents' bytes, so the dispatcher
never unpickles a user value.

A node's incoming edges are described by a ``Layout``: one ``(edge kind, name, index)`` per
parent, in edge order; ``arguments`` turns the parents' values into call arguments.

>>> import cloudpickle
>>> layout = (("arg", "x", 0), ("arg", "x", 1))
>>> data = gathered_bytes("list", None, layout, [cloudpickle.dumps(1), cloudpickle.dumps("a")])
>>> cloudpickle.loads(data)
[1, 'a']
"""

from __future__ import annotations

import operator
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cloudpickle

Layout = tuple[tuple[str, str, int | None], ...]  # (edge kind, name, index) per parent

GATHER_KINDS = frozenset({"list", "tuple", "dict", "postprocess"})


@dataclass(frozen=True, slots=True)
class NodeOutput:
    """Placeholder for a node's output inside the lattice's return template."""

    node_id: int


def fill_template(template: Any, outputs: dict[int, Any]) -> Any:
    """Replace every NodeOutput in ``template`` by that node's output.

    >>> fill_template({"a": [NodeOutput(0), 2]}, {0: 1})
    {'a': [1, 2]}
    """
    if isinstance(template, NodeOutput):
        return outputs[template.node_id]
    if isinstance(template, list):
        return [fill_template(v, outputs) for v in template]
    if is_namedtuple(template):
        make = getattr(type(template), "_make", None)
        return make(fill_template(v, outputs) for v in template) if make is not None else template
    if isinstance(template, tuple):
        return tuple(fill_template(v, outputs) for v in template)
    if isinstance(template, dict):
        return {k: fill_template(v, outputs) for k, v in template.items()}
    if isinstance(template, set | frozenset):
        return type(template)(fill_template(v, outputs) for v in template)
    return template


def template_refs(template: Any) -> list[int]:
    """The node ids a return template refers to, first occurrence order.

    >>> template_refs([NodeOutput(2), {"a": NodeOutput(0), "b": NodeOutput(2)}])
    [2, 0]
    """
    found: list[int] = []

    def walk(v: Any) -> None:
        if isinstance(v, NodeOutput):
            found.append(v.node_id)
        elif isinstance(v, list | tuple | set | frozenset):
            for x in v:
                walk(x)
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)

    walk(template)
    return list(dict.fromkeys(found))


def is_namedtuple(value: Any) -> bool:
    return isinstance(value, tuple) and hasattr(value, "_fields")


_FIRST = operator.itemgetter(0)


def arguments(layout: Layout, values: Sequence[Any]) -> tuple[list[Any], dict[str, Any]]:
    """Positional and keyword arguments from the parents' values, in edge order.

    >>> arguments((("arg", "x", 1), ("kwarg", "k", None), ("arg", "y", 0), ("wait", "", None)),
    ...           ["b", 3, "a", None])
    (['a', 'b'], {'k': 3})
    """
    if len(layout) == len(values) and all(
            entry[0] == "arg" and entry[2] == i for i, entry in enumerate(layout)):
        return list(values), {}  # positional only, in order: a gathered list, most often
    positional: list[tuple[int, Any]] = []
    keyword: dict[str, Any] = {}
    for (kind, name, index), value in zip(layout, values, strict=True):
        if kind == "wait":
            continue
        if kind == "arg":
            positional.append((index if index is not None else len(positional), value))
        else:
            keyword[name] = value
    positional.sort(key=_FIRST)
    return [v for _, v in positional], keyword


def gather(kind: str, extra: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """The value of a gathering node; ``extra`` is the dict's keys, the namedtuple's type or the
    result's template."""
    if kind == "list":
        return args
    if kind == "tuple":  # ``extra``: a namedtuple's type
        return extra._make(args) if extra is not None else tuple(args)
    if kind == "dict":
        return dict(zip(extra, args, strict=True))
    if kind == "postprocess":
        outputs = {int(k.split(":", 1)[1]): v for k, v in kwargs.items()}
        return fill_template(extra, outputs)
    raise ValueError(f"a {kind!r} node is not a gathering node")


def gather_from_bytes(kind: str, extra: bytes | None, layout: Layout,
                      parts: list[bytes | None]) -> Any:
    """Gather a node's value from its parents' pickled outputs (runs when its pickle loads)."""
    values = [cloudpickle.loads(p) if p is not None else None for p in parts]
    args, kwargs = arguments(layout, values)
    return gather(kind, cloudpickle.loads(extra) if extra is not None else None, args, kwargs)


class _Gathered:
    """Pickles as a call to ``gather_from_bytes``: only bytes and strings inside."""

    __slots__ = ("args",)

    def __init__(self, *args: Any) -> None:
        self.args = args

    def __reduce__(self) -> tuple[Any, ...]:
        return (gather_from_bytes, self.args)


def gathered_bytes(kind: str, extra: bytes | None, layout: Layout,
                   parts: list[bytes | None]) -> bytes:
    """The stored output of a gathering node, made from bytes alone (used by the dispatcher)."""
    return pickle.dumps(_Gathered(kind, extra, tuple(layout), parts), protocol=5)

