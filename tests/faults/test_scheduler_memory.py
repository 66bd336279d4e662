"""The embedded scheduler process does not keep every dispatch it ever ran (issue #21).

Dask's scheduler keeps a span (the metrics of a stretch of work, with its task groups) for
each stretch between idle moments, forever (one per dispatch when they come one at a time),
and ``key_split`` caches every task key it saw: the scheduler process grew by megabytes a
minute under load and never gave it back. Here more dispatches than the spans kept run one
after another; the scheduler (asked through its Unix socket, as its user can) ends
with no more spans than that, an emptied cache, and keeps working.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from distributed import Client

import covalent as ct
from dispatcher.scheduler_process import PRUNE_EVERY_S, SPANS_KEPT
from tests.conftest import wait_until
from tests.faults.conftest import ServerProcess
from tests.tasks import two_node

pytestmark = [pytest.mark.slow, pytest.mark.processes, pytest.mark.timeout(180)]


def _history(dask_scheduler: Any) -> tuple[int, int, int]:
    """Spans the scheduler keeps, the task groups they hold, task keys cached by key_split."""
    from dask.utils import key_split

    ext = dask_scheduler.extensions["spans"]
    return (len(ext.spans), len({id(tg) for span in ext.spans.values() for tg in span.groups}),
            key_split.cache_info().currsize)


async def test_the_scheduler_forgets_finished_work_beyond_a_bound(
        server: ServerProcess) -> None:
    server.start()
    info = server.status()
    assert info is not None
    runs = SPANS_KEPT + 30
    for i in range(runs):  # one at a time: the cluster is idle between them
        dispatch_id = await asyncio.to_thread(ct.dispatch(two_node, dispatcher_addr=server.addr), i, 1)
        await asyncio.to_thread(ct.get_result, dispatch_id, True, server.addr, True)
    async with Client(info["cluster"]["scheduler"], asynchronous=True, timeout=10) as client:

        async def history() -> tuple[int, int, int]:
            return await client.run_on_scheduler(_history)  # type: ignore[no-any-return]

        await wait_until(lambda: bounded(history), timeout=3 * PRUNE_EVERY_S)
        count, groups, cached = await history()
    assert count <= SPANS_KEPT and groups <= 2 * SPANS_KEPT and cached < runs
    last = await asyncio.to_thread(ct.dispatch(two_node, dispatcher_addr=server.addr), 2, 3)
    result = await asyncio.to_thread(ct.get_result, last, True, server.addr)
    assert result.result == 10  # what was forgotten is not needed


async def bounded(history: Any) -> bool:
    count, _, cached = await history()
    return bool(count <= SPANS_KEPT and cached < SPANS_KEPT)


@ct.electron
def _inc(x: int) -> int:
    return x + 1


@ct.electron
def _total(xs: list[int]) -> int:
    return sum(xs)


@ct.lattice
def _wide(n: int) -> int:
    return _total([_inc(i) for i in range(n)])


def _keys_of(dispatch_ids: list[str], dask_scheduler: Any = None) -> dict[str, int]:
    """How many tasks of each dispatch the scheduler still holds (any state)."""
    held = dict.fromkeys(dispatch_ids, 0)
    for key in dask_scheduler.tasks:
        name = str(key[0] if isinstance(key, tuple) else key)
        for dispatch_id in dispatch_ids:
            if dispatch_id in name:
                held[dispatch_id] += 1
    return held


async def test_a_finished_dispatch_leaves_nothing_on_the_cluster(server: ServerProcess) -> None:
    """A dispatch ends at its last node's outcome, while its Dask futures may still be awaited:
    the dispatcher lets them go then, and the scheduler keeps none of its tasks (a future kept
    alive held a 1,000-node graph's tasks on the scheduler and a worker until the dispatcher's
    next full garbage collection, which an idle dispatcher never ran)."""
    server.start()
    info = server.status()
    assert info is not None
    done = []
    for n in (1000, 300, 1000):
        dispatch_id = await asyncio.to_thread(ct.dispatch(_wide, dispatcher_addr=server.addr), n)
        result = await asyncio.to_thread(ct.get_result, dispatch_id, True, server.addr)
        assert result.status == ct.status.COMPLETED and result.result == n * (n + 1) // 2
        done.append(dispatch_id)
    async with Client(info["cluster"]["scheduler"], asynchronous=True, timeout=10) as client:

        held: dict[str, int] = {}

        async def none_held() -> bool:
            held.update(await client.run_on_scheduler(_keys_of, done))
            return not any(held.values())

        try:
            await wait_until(none_held, timeout=15, interval=0.1)
        except AssertionError:
            raise AssertionError(f"tasks the scheduler still holds, by dispatch: {held}") from None
