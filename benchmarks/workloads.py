"""The benchmark workloads, each as a lattice and as the same plain Dask graph.

Both sides call the same plain functions on the same cluster; ``raw`` is what the graph costs
in Dask alone, ``ours`` adds graph building, the request, the store and the result fetch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import covalent as ct


def add(x: int, y: int) -> int:
    return x + y


def multiply(x: int, y: int) -> int:
    return x * y


def inc(x: int) -> int:
    return x + 1


def total(xs: list[int]) -> int:
    return sum(xs)


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    i = 2
    while i * i <= n:
        if n % i == 0:
            return False
        i += 1
    return True


def matrix(n: int, seed: int) -> Any:
    import numpy as np

    return np.random.default_rng(seed).random((n, n))


def matmul(a: Any, b: Any) -> Any:
    return (a @ b) / a.shape[0]


e_add, e_mul, e_inc, e_total = (ct.electron(f) for f in (add, multiply, inc, total))
e_prime, e_matrix, e_matmul = ct.electron(is_prime), ct.electron(matrix), ct.electron(matmul)


@dataclass(frozen=True)
class Workload:
    name: str
    nodes: int
    lattice: Any
    args: tuple[Any, ...]
    raw: Callable[[], tuple[dict[Any, Any], Any]]  # (dask graph, final key)


def two_node() -> Workload:
    @ct.lattice
    def wf(x, y):
        return e_mul(e_add(x, y), 2)

    return Workload("two-node", 2, wf, (1, 2),
                    lambda: ({"a": (add, 1, 2), "b": (multiply, "a", 2)}, "b"))


def chain(n: int) -> Workload:
    @ct.lattice
    def wf(n):
        x = 0
        for _ in range(n):
            x = e_inc(x)
        return x

    def raw() -> tuple[dict[Any, Any], Any]:
        dsk: dict[Any, Any] = {("c", 0): (inc, 0)}
        for i in range(1, n):
            dsk[("c", i)] = (inc, ("c", i - 1))
        return dsk, ("c", n - 1)

    return Workload(f"chain-{n}", n, wf, (n,), raw)


def fan_out(n: int) -> Workload:
    @ct.lattice
    def wf(n):
        return e_total([e_inc(i) for i in range(n)])

    def raw() -> tuple[dict[Any, Any], Any]:
        dsk: dict[Any, Any] = {("f", i): (inc, i) for i in range(n)}
        dsk["total"] = (total, [("f", i) for i in range(n)])
        return dsk, "total"

    return Workload(f"fan-out-{n}", n + 1, wf, (n,), raw)


def square(w: int) -> Workload:
    @ct.lattice
    def wf(w):
        layer = [e_inc(i) for i in range(w)]
        for _ in range(w - 1):
            layer = [e_total(layer) for _ in range(w)]
        return e_total(layer)

    def raw() -> tuple[dict[Any, Any], Any]:
        dsk: dict[Any, Any] = {("s", 0, i): (inc, i) for i in range(w)}
        for layer in range(1, w):
            for i in range(w):
                dsk[("s", layer, i)] = (total, [("s", layer - 1, j) for j in range(w)])
        dsk["end"] = (total, [("s", w - 1, j) for j in range(w)])
        return dsk, "end"

    return Workload(f"square-{w}x{w}", w * w + 1, wf, (w,), raw)


def primes(n: int, start: int = 10**11) -> Workload:
    @ct.lattice
    def wf(n, start):
        return [e_prime(start + i) for i in range(n)]

    def raw() -> tuple[dict[Any, Any], Any]:
        dsk: dict[Any, Any] = {("p", i): (is_prime, start + i) for i in range(n)}
        dsk["all"] = (list, [("p", i) for i in range(n)])
        return dsk, "all"

    return Workload(f"primes-{n}", n, wf, (n, start), raw)


def matmul_chain(size: int, length: int = 4) -> Workload:
    @ct.lattice
    def wf(size, length):
        a = e_matrix(size, 0)
        for i in range(length):
            a = e_matmul(a, e_matrix(size, i + 1))
        return a

    def raw() -> tuple[dict[Any, Any], Any]:
        dsk: dict[Any, Any] = {("m", 0): (matrix, size, 0)}
        for i in range(length):
            dsk[("b", i)] = (matrix, size, i + 1)
            dsk[("m", i + 1)] = (matmul, ("m", i), ("b", i))
        return dsk, ("m", length)

    return Workload(f"matmul-{size}", 2 * length + 1, wf, (size, length), raw)


def all_workloads(quick: bool) -> list[Workload]:
    if quick:
        return [two_node(), chain(20), fan_out(50), square(8), primes(8, 10**9), matmul_chain(128, 2)]
    return [two_node(), chain(50), chain(1000), fan_out(50), fan_out(1000), fan_out(10000),
            square(32), primes(50), matmul_chain(128), matmul_chain(512), matmul_chain(1024)]


def small_workflow() -> Workload:
    """The 10-electron workflow of the concurrency benchmark."""
    @ct.lattice
    def wf(x):
        return e_total([e_add(x, i) for i in range(9)])

    return Workload("concurrent-10", 10, wf, (1,), lambda: ({}, None))
