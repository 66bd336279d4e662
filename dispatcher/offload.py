"""Run CPU-bound work of a request off the event loop only when it is large enough to matter.

A 100,000-node dispatch takes seconds to parse, compile and pickle, which must not hold the
event loop: that work runs in a thread. A 10-node dispatch takes microseconds for the same
steps, and each hand-off to a thread costs more than that (a wake-up of the loop, the GIL
passed back and forth; on a shared 2-core machine, as much as the dispatch's own work, #23).
``off_loop`` decides by a measure of the work the caller knows: nodes, or bytes.

>>> import asyncio
>>> asyncio.run(off_loop(3, sum, [1, 2]))
3
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

INLINE_NODES = 200  # a graph this small is handled on the loop
INLINE_BYTES = 256 << 10  # as is a JSON text this long


async def off_loop(work: int, fn: Callable[..., T], *args: Any, limit: int = INLINE_NODES) -> T:
    """``fn(*args)``: in a thread when ``work`` exceeds ``limit``, else right here."""
    if work > limit:
        return await asyncio.to_thread(fn, *args)
    return fn(*args)
