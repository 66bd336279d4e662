"""Poll a SQLiteTrigger's or DatabaseTrigger's table inside the dispatcher.

One poller per trigger: its polls run one at a time on a thread of its own (a database that
hangs holds that thread, never the server's loop or its other threads), each bounded by the
driver's timeouts; one still running after ``POLL_TIMEOUT_S`` is reported in ``last_error``
and waited for, never run twice. A failed poll is reported and polling goes on (the table may
appear later); a successful one clears the report. Fires every ``trigger_after_n`` polls
that find matching rows (see ``covalent.triggers.polling``).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from covalent.triggers.polling import PollingTrigger

from .observing import Observing

log = logging.getLogger("covalent.triggers")


async def observe_polling(trigger: PollingTrigger, ctx: Observing) -> str:
    """Poll every ``poll_interval`` seconds until ``ctx.stopped``; returns "stopped"."""
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"poll-{trigger.table_name[:20]}")
    stop_wait: asyncio.Future[Any] = asyncio.ensure_future(ctx.stopped.wait())
    ctx.ready.set()
    try:
        while not ctx.stopped.is_set():
            poll: asyncio.Future[Any] = loop.run_in_executor(pool, trigger.poll)
            found = False
            while True:
                done, _ = await asyncio.wait({poll, stop_wait}, timeout=trigger.POLL_TIMEOUT_S,
                                             return_when=asyncio.FIRST_COMPLETED)
                if stop_wait in done:
                    return "stopped"
                if poll in done:
                    break
                ctx.report_error(f"a poll of {trigger.table_name!r} has run for over "
                                 f"{trigger.POLL_TIMEOUT_S:g} s; waiting for it")
            try:
                found = poll.result()
            except Exception as exc:  # the database's errors are many: report, poll again
                text = f"{type(exc).__name__}: {exc}".strip()[:2000]
                log.info("%s of dispatch %s: poll failed: %s", type(trigger).__name__,
                         trigger.lattice_dispatch_id, text)
                ctx.report_error(text)
            else:
                ctx.report_error(None)
            if trigger.counted(found):
                await ctx.fire()
            await asyncio.wait({stop_wait}, timeout=trigger.poll_interval)
        return "stopped"
    finally:
        stop_wait.cancel()
        pool.submit(trigger.close)
        pool.shutdown(wait=False, cancel_futures=False)
