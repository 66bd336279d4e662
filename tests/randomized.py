"""Electrons of the randomized end-to-end tests (importable by worker processes).

Every step keeps a side-effect ledger in a directory of the test's: ``<i>.start`` gets a line
(its wall-clock time) each time step ``i``'s code starts, ``<i>.done`` each time it returns; the
test reads them to check that nothing ran twice and nothing downstream of a failure started.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import covalent as ct


def value_of(i: int, inputs: Any) -> int:
    """What step ``i`` returns for these inputs (the plain-Python model of the workflow).

    >>> value_of(2, (1, [2, 3]))
    27
    """
    return (i + 1) * 7 + sum(_flat(inputs))


def _flat(x: Any) -> list[int]:
    if isinstance(x, list | tuple):
        return [v for item in x for v in _flat(item)]
    return [int(x)]


def _note(ledger: str, name: str) -> None:
    with open(Path(ledger) / name, "a") as fh:
        fh.write(f"{time.time()!r}\n")  # when: a killed dispatcher's lost run is told apart


def step(i: int, ledger: str, behaviour: str, delay: float, *inputs: Any) -> int:
    _note(ledger, f"{i}.start")
    time.sleep(delay)
    if behaviour == "fail":
        raise ValueError(f"step {i} fails")
    if behaviour == "flaky" and not (Path(ledger) / f"{i}.failed-once").exists():
        _note(ledger, f"{i}.failed-once")
        raise RuntimeError(f"step {i} fails its first attempt")
    out = value_of(i, inputs)
    _note(ledger, f"{i}.done")
    return out


retried_step = ct.electron(step, executor=ct.executor.DaskExecutor(retries=1))
step = ct.electron(step)  # type: ignore[assignment]


@ct.lattice
def _inner(i: int, ledger: str, behaviour: str, delay: float, *inputs: Any) -> Any:
    return step(i, ledger, behaviour, delay, *inputs)


sub = ct.electron(_inner)
