"""The benchmark workloads, each as a lattice and as the same plain Dask graph.

Both sides call the same plain functions; ``raw`` is what the graph costs in Dask alone,
``ours`` adds graph building, the request, the store and the result fetch. ``Workload.raw``
takes a fresh ``uid`` and puts it in every key, so no repetition can be served from a result
the scheduler still holds (issue #14).

This module imports nothing of ours but ``covalent``'s public API, so the Covalent peer
runner can load it with a real Covalent install (see ``peer.py``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import covalent as ct

Graph = tuple[dict[Any, Any], Any]  # (dask graph, final key)


def add(x: int, y: int) -> int:
    return x + y


def multiply(x: int, y: int) -> int:
    return x * y


def inc(x: int) -> int:
    return x + 1


def total(xs: list[int]) -> int:
    return sum(xs)


STAMP_ENV = "COVALENT_BENCH_STAMP"  # a path: the first task to run writes its start time there


def stamped_inc(x: int) -> int:
    """``inc``, and the first call anywhere writes ``time.time()`` to ``$COVALENT_BENCH_STAMP``
    (which the benchmark removes before each run): when the first task started."""
    path = os.environ.get(STAMP_ENV)
    if path and not os.path.exists(path):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            return x + 1
        os.write(fd, repr(time.time()).encode())
        os.close(fd)
    return x + 1


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


def filled(n: int, value: float) -> Any:
    import numpy as np

    return np.full(n, value)


def sum_of_sums(arrays: list[Any]) -> float:
    return float(sum(float(a.sum()) for a in arrays))


e_add, e_mul, e_inc, e_total = (ct.electron(f) for f in (add, multiply, inc, total))
e_prime, e_matrix, e_matmul = ct.electron(is_prime), ct.electron(matrix), ct.electron(matmul)
e_filled, e_sum_of_sums = ct.electron(filled), ct.electron(sum_of_sums)
e_stamped_inc = ct.electron(stamped_inc)


@dataclass(frozen=True)
class Workload:
    name: str
    nodes: int
    lattice: Any
    args: tuple[Any, ...]
    raw: Callable[[str], Graph]  # uid -> graph whose every key contains uid
    measure_memory: bool = False  # also measure the clients' peak memory (memory.py)
    output_bytes: tuple[int, ...] = ()  # sizes of the outputs ours stores (floor.py)


def two_node() -> Workload:
    @ct.lattice
    def wf(x: int, y: int) -> int:
        return e_mul(e_add(x, y), 2)

    def raw(uid: str) -> Graph:
        a, b = f"add-{uid}", f"multiply-{uid}"
        return {a: (add, 1, 2), b: (multiply, a, 2)}, b

    return Workload("two-node", 2, wf, (1, 2), raw)


def chain(n: int) -> Workload:
    @ct.lattice
    def wf(n: int) -> int:
        x = 0
        for _ in range(n):
            x = e_inc(x)
        return x

    def raw(uid: str) -> Graph:
        c = f"inc-{uid}"
        dsk: dict[Any, Any] = {(c, 0): (inc, 0)}
        for i in range(1, n):
            dsk[(c, i)] = (inc, (c, i - 1))
        return dsk, (c, n - 1)

    return Workload(f"chain-{n}", n, wf, (n,), raw)


def fan_out(n: int, stamped: bool = False) -> Workload:
    """fan-out-N; ``stamped``: first-task-N, whose first task to run says when it started
    (``first_task.py``)."""
    step, fn = (e_stamped_inc, stamped_inc) if stamped else (e_inc, inc)

    @ct.lattice
    def wf(n: int) -> int:
        return e_total([step(i) for i in range(n)])

    def raw(uid: str) -> Graph:
        f, end = f"{fn.__name__}-{uid}", f"total-{uid}"
        dsk: dict[Any, Any] = {(f, i): (fn, i) for i in range(n)}
        dsk[end] = (total, [(f, i) for i in range(n)])
        return dsk, end

    return Workload(f"{'first-task' if stamped else 'fan-out'}-{n}", n + 1, wf, (n,), raw)


def square(w: int) -> Workload:
    @ct.lattice
    def wf(w: int) -> int:
        layer = [e_inc(i) for i in range(w)]
        for _ in range(w - 1):
            layer = [e_total(layer) for _ in range(w)]
        return e_total(layer)

    def raw(uid: str) -> Graph:
        s, end = f"square-{uid}", f"total-{uid}"
        dsk: dict[Any, Any] = {(s, 0, i): (inc, i) for i in range(w)}
        for layer in range(1, w):
            for i in range(w):
                dsk[(s, layer, i)] = (total, [(s, layer - 1, j) for j in range(w)])
        dsk[end] = (total, [(s, w - 1, j) for j in range(w)])
        return dsk, end

    return Workload(f"square-{w}x{w}", w * w + 1, wf, (w,), raw)


def primes(n: int, start: int = 10**11) -> Workload:
    @ct.lattice
    def wf(n: int, start: int) -> list[bool]:
        return [e_prime(start + i) for i in range(n)]

    def raw(uid: str) -> Graph:
        p, end = f"is_prime-{uid}", f"list-{uid}"
        dsk: dict[Any, Any] = {(p, i): (is_prime, start + i) for i in range(n)}
        dsk[end] = (list, [(p, i) for i in range(n)])
        return dsk, end

    return Workload(f"primes-{n}", n, wf, (n, start), raw)


def matmul_chain(size: int, length: int = 4) -> Workload:
    @ct.lattice
    def wf(size: int, length: int) -> Any:
        a = e_matrix(size, 0)
        for i in range(length):
            a = e_matmul(a, e_matrix(size, i + 1))
        return a

    def raw(uid: str) -> Graph:
        m, b = f"matmul-{uid}", f"matrix-{uid}"
        dsk: dict[Any, Any] = {(m, 0): (matrix, size, 0)}
        for i in range(length):
            dsk[(b, i)] = (matrix, size, i + 1)
            dsk[(m, i + 1)] = (matmul, (m, i), (b, i))
        return dsk, (m, length)

    return Workload(f"matmul-{size}", 2 * length + 1, wf, (size, length), raw)


def arrays(n: int, count: int = 4) -> Workload:
    """``count`` electrons each returning ``n`` float64s, reduced to one number."""
    @ct.lattice
    def wf(n: int, count: int) -> float:
        return e_sum_of_sums([e_filled(n, i + 1.0) for i in range(count)])

    def raw(uid: str) -> Graph:
        a, end = f"filled-{uid}", f"sum_of_sums-{uid}"
        dsk: dict[Any, Any] = {(a, i): (filled, n, i + 1.0) for i in range(count)}
        dsk[end] = (sum_of_sums, [(a, i) for i in range(count)])
        return dsk, end

    mb = n * 8 // 1_000_000
    return Workload(f"arrays-{count}x{mb}MB", count + 1, wf, (n, count), raw, measure_memory=True,
                    output_bytes=(n * 8,) * count)


def all_workloads(quick: bool) -> list[Workload]:
    if quick:
        return [two_node(), chain(20), fan_out(50), square(8), primes(8, 10**9), matmul_chain(128, 2),
                arrays(1_000_000)]
    return [two_node(), chain(50), chain(1000), fan_out(50), fan_out(1000), fan_out(10000),
            square(32), primes(50), matmul_chain(128), matmul_chain(512), matmul_chain(1024),
            arrays(25_000_000)]


def small_workflow() -> Workload:
    """The 10-electron workflow of the concurrency benchmark: nine adds and their total (45)."""
    @ct.lattice
    def wf(x: int) -> int:
        return e_total([e_add(x, i) for i in range(9)])

    def raw(uid: str) -> Graph:
        a, end = f"add-{uid}", f"total-{uid}"
        dsk: dict[Any, Any] = {(a, i): (add, 1, i) for i in range(9)}
        dsk[end] = (total, [(a, i) for i in range(9)])
        return dsk, end

    return Workload("concurrent-10", 10, wf, (1,), raw)
