"""Values of the nodes that only gather other nodes' outputs: lists, tuples, dicts, the result.

An ``:electron_list:`` node, an ``:electron_dict:`` node or the ``:postprocess:`` node computes
nothing of its own; its value is its parents' outputs put together. Such a node does not need a
Dask task: a consumer on a worker builds it in place from its parents (``combine``), and the
dispatcher records its output as a small pickle that rebuilds the value from the parents'
pickled outputs when it is loaded (``assembled_bytes``). Building that pickle needs only the
parents' bytes, so the dispatcher still never unpickles a user value.

>>> import cloudpickle
>>> layout = (("arg", "x", 0), ("arg", "x", 1))
>>> data = assembled_bytes("list", None, layout, [cloudpickle.dumps(1), cloudpickle.dumps("a")])
>>> cloudpickle.loads(data)
[1, 'a']
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import Any

import cloudpickle

from ._builder import fill_template

Layout = tuple[tuple[str, str, int | None], ...]  # (edge kind, name, index) per parent

DERIVED_KINDS = frozenset({"list", "tuple", "dict", "postprocess"})


def arguments(layout: Layout, values: Sequence[Any]) -> tuple[list[Any], dict[str, Any]]:
    """Positional and keyword arguments from the parents' values, in edge order.

    >>> arguments((("arg", "x", 1), ("kwarg", "k", None), ("arg", "y", 0), ("wait", "", None)),
    ...           ["b", 3, "a", None])
    (['a', 'b'], {'k': 3})
    """
    positional: list[tuple[int, Any]] = []
    keyword: dict[str, Any] = {}
    for (kind, name, index), value in zip(layout, values, strict=True):
        if kind == "wait":
            continue
        if kind == "arg":
            positional.append((index if index is not None else len(positional), value))
        else:
            keyword[name] = value
    positional.sort(key=lambda p: p[0])
    return [v for _, v in positional], keyword


def combine(kind: str, extra: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """The value of a gathering node; ``extra`` is the dict's keys or the result's template."""
    if kind == "list":
        return args
    if kind == "tuple":
        return tuple(args)
    if kind == "dict":
        return dict(zip(extra, args, strict=True))
    if kind == "postprocess":
        outputs = {int(k.split(":", 1)[1]): v for k, v in kwargs.items()}
        return fill_template(extra, outputs)
    raise ValueError(f"a {kind!r} node is not a gathering node")


def assemble(kind: str, extra: bytes | None, layout: Layout, parts: list[bytes | None]) -> Any:
    """Rebuild a gathering node's value from its parents' pickled outputs (runs on load)."""
    values = [cloudpickle.loads(p) if p is not None else None for p in parts]
    args, kwargs = arguments(layout, values)
    return combine(kind, cloudpickle.loads(extra) if extra is not None else None, args, kwargs)


class _Assembly:
    """Pickles as a call to ``assemble``: only bytes and strings inside."""

    __slots__ = ("args",)

    def __init__(self, *args: Any) -> None:
        self.args = args

    def __reduce__(self) -> tuple[Any, ...]:
        return (assemble, self.args)


def assembled_bytes(kind: str, extra: bytes | None, layout: Layout,
                    parts: list[bytes | None]) -> bytes:
    """The stored output of a gathering node, made from bytes alone (used by the dispatcher)."""
    return pickle.dumps(_Assembly(kind, extra, tuple(layout), parts), protocol=5)
