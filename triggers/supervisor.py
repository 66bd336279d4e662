"""Run every registered trigger as one task on the server's event loop.

Built-in triggers observe with coroutines (``observe_async``); a custom trigger's ``observe()``
runs in a thread, so a blocking one never blocks the loop, and its ``trigger()`` reaches the
loop thread-safely. The supervisor knows nothing of HTTP, Dask or SQL: it is given ``fire``
(start or redispatch a dispatch, returning the new id) and ``persist`` (save a trigger's state).
A trigger whose dispatch is gone or whose directory disappears stops with a logged reason.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .base import BaseTrigger

log = logging.getLogger("covalent.triggers")

Fire = Callable[[str], Awaitable[str]]


@dataclass(eq=False)
class Observed:
    """One registered trigger while the server observes it."""

    trigger_id: str
    trigger: BaseTrigger
    dispatch_id: str
    custom: bool
    fire_count: int = 0
    active: bool = True
    reason: str = ""
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    ready: asyncio.Event = field(default_factory=asyncio.Event)  # observing has begun
    task: asyncio.Task[None] | None = None

    def info(self) -> dict[str, Any]:
        return {"trigger_id": self.trigger_id, "name": type(self.trigger).__name__,
                "dispatch_id": self.dispatch_id, "active": self.active,
                "fire_count": self.fire_count, "reason": self.reason,
                "new_dispatch_ids": list(self.trigger.new_dispatch_ids),
                "trigger": self.trigger.to_dict()}


class TriggerSupervisor:
    """Owns one asyncio task per active trigger."""

    def __init__(self, fire: Fire, persist: Callable[[Observed], Awaitable[None]]) -> None:
        self._fire = fire
        self._persist = persist
        self.observed: dict[str, Observed] = {}

    def start(self, trigger_id: str, trigger: BaseTrigger, *, custom: bool,
              fire_count: int = 0) -> Observed:
        assert trigger.lattice_dispatch_id
        obs = Observed(trigger_id, trigger, trigger.lattice_dispatch_id, custom, fire_count)
        trigger.use_internal_funcs = True
        self.observed[trigger_id] = obs
        obs.task = asyncio.create_task(self._run(obs), name=f"trigger-{trigger_id}")
        return obs

    def listing(self, active_only: bool = False) -> list[dict[str, Any]]:
        return [o.info() for o in self.observed.values() if o.active or not active_only]

    async def stop_dispatches(self, dispatch_ids: list[str]) -> int:
        """Stop every trigger of these dispatches; when it returns no trigger fires again."""
        targets = [o for o in self.observed.values() if o.dispatch_id in dispatch_ids and o.active]
        for o in targets:
            o.stopped.set()
        await asyncio.gather(*(o.task for o in targets if o.task), return_exceptions=True)
        for o in targets:
            o.active, o.reason = False, "stopped"
            await self._persist(o)
        return len(targets)

    async def close(self) -> None:
        """Server shutdown: stop observing but keep triggers active in the store."""
        for o in self.observed.values():
            o.stopped.set()
        tasks = [o.task for o in self.observed.values() if o.task]
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _fire_once(self, obs: Observed) -> str | None:
        if obs.stopped.is_set():
            return None
        new_id = await self._fire(obs.dispatch_id)
        obs.fire_count += 1
        if new_id != obs.dispatch_id:
            obs.trigger.new_dispatch_ids.append(new_id)
        await self._persist(obs)
        return new_id

    async def _run(self, obs: Observed) -> None:
        observe_async = getattr(obs.trigger, "observe_async", None)
        try:
            if observe_async is not None and not obs.custom:
                reason = await observe_async(lambda: self._fire_once(obs), obs.stopped, obs.ready)
            else:
                reason = await self._observe_in_thread(obs)
        except asyncio.CancelledError:
            raise
        except LookupError as exc:
            reason = f"dispatch {obs.dispatch_id} no longer exists ({exc})"
        except Exception as exc:  # a trigger's failure stops that trigger, never the server
            reason = f"{type(exc).__name__}: {exc}"
        if reason != "stopped" or not obs.stopped.is_set():
            obs.ready.set()
            log.warning("trigger %s of dispatch %s stopped: %s", obs.trigger_id, obs.dispatch_id, reason)
            obs.active, obs.reason = False, reason
            await self._persist(obs)

    async def _observe_in_thread(self, obs: Observed) -> str:
        loop = asyncio.get_running_loop()
        trigger = obs.trigger
        trigger.event_loop = loop
        trigger.stop_flag = threading.Event()

        def fire_from_thread() -> str | None:
            return asyncio.run_coroutine_threadsafe(self._fire_once(obs), loop).result()

        trigger._fire = fire_from_thread
        observing = asyncio.ensure_future(asyncio.to_thread(trigger.observe))
        obs.ready.set()
        stop_wait = asyncio.ensure_future(obs.stopped.wait())
        try:
            done, _ = await asyncio.wait({observing, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            if observing in done and observing.exception() is not None:
                raise observing.exception()  # type: ignore[misc]
            await stop_wait  # a non-blocking observe() returned: keep it until stopped
            return "stopped"
        finally:
            stop_wait.cancel()
            trigger.stop_flag.set()
            await asyncio.to_thread(trigger.stop)
            if not observing.done():
                await asyncio.wait({observing}, timeout=10)
