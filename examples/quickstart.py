"""Run the README's example workflow on the running dispatcher (``covalent start`` first)."""

from __future__ import annotations

import covalent as ct


@ct.electron
def add(x, y):
    return x + y


@ct.electron
def sum_all(xs):
    return sum(xs)


@ct.electron
def split(xs):
    return xs[: len(xs) // 2], xs[len(xs) // 2 :]


@ct.lattice
def wf(n):
    parts = [add(i, 1) for i in range(n)]      # fan-out
    total = add(sum_all(parts), 0)             # electron outputs inside a list argument
    a, b = split(parts)                        # unpacking an electron output
    return {"total": total, "first": parts[0], "halves": [a, b]}


if __name__ == "__main__":
    dispatch_id = ct.dispatch(wf)(10)
    print("dispatch id:", dispatch_id)
    result = ct.get_result(dispatch_id, wait=True)
    print(result)
    assert result.status == ct.status.COMPLETED and result.result["total"] == 55
    print("OK: total =", result.result["total"])
