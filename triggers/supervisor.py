"""Run every registered trigger as one task on the server's event loop.

Built-in triggers (rebuilt from JSON) observe as coroutines (``observers``); a custom trigger
is observed in a process of its own (``host``), so its pickle never loads in the server and a
blocking ``observe()`` never blocks the loop. The supervisor knows nothing of HTTP, Dask or
SQL: it is given ``fire`` (start or redispatch a dispatch, returning the id that ran) and
``persist`` (save a trigger's state). A trigger that cannot go on stops with a logged reason,
shown in ``/triggers``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from covalent.triggers import BaseTrigger

from .host import TriggerLoadError, run_host
from .observers import DirWatcher
from .observing import Observing
from .registry import from_dict, observe

log = logging.getLogger("covalent.triggers")

Fire = Callable[[str, str, int], Awaitable[str]]  # (dispatch id, trigger id, fire number)
READY_TIMEOUT_S = 20.0
SAVE_DELAY_S = 0.5  # a count not yet saved is lost by a kill -9: saved this soon after it changes


class FireRefused(Exception):
    """The dispatcher refuses a trigger's fires for good (its user was revoked): the trigger
    stops, with this as its reason."""


@dataclass(eq=False)
class Observed:
    """One registered trigger while the server observes it.

    ``trigger`` is the rebuilt object of a built-in trigger; a custom one is ``pickled`` bytes
    only, described by the ``spec`` its own process reported.
    """

    trigger_id: str
    dispatch_id: str
    name: str
    spec: dict[str, Any]
    trigger: BaseTrigger | None = None
    pickled: bytes | None = None
    new_dispatch_ids: list[str] = field(default_factory=list)
    fire_count: int = 0
    active: bool = True
    reason: str = ""
    last_fired: str | None = None  # ISO times; kept in the stored spec across restarts
    next_fire: str | None = None  # a TimeTrigger's next tick
    last_error: str | None = None  # a problem that did not stop it (a failed poll)
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    ready: asyncio.Event = field(default_factory=asyncio.Event)  # observing has begun
    task: asyncio.Task[None] | None = None
    restored: bool = False  # registered before this server started
    save_due: asyncio.TimerHandle | None = None  # a changed count, saved when it is due

    def current_spec(self) -> dict[str, Any]:
        spec = self.trigger.to_dict() if self.trigger is not None else dict(self.spec)
        spec["new_dispatch_ids"] = list(self.new_dispatch_ids)
        spec["last_fired"], spec["last_error"] = self.last_fired, self.last_error
        return spec

    def info(self) -> dict[str, Any]:
        return {"trigger_id": self.trigger_id, "name": self.name, "dispatch_id": self.dispatch_id,
                "active": self.active, "fire_count": self.fire_count, "reason": self.reason,
                "new_dispatch_ids": list(self.new_dispatch_ids), "last_fired": self.last_fired,
                "next_fire": self.next_fire, "last_error": self.last_error,
                "trigger": self.current_spec()}


class TriggerSupervisor:
    """Owns one asyncio task per active trigger, and the one directory watcher."""

    def __init__(self, fire: Fire, persist: Callable[[Observed], Awaitable[None]]) -> None:
        self._fire = fire
        self._persist = persist
        self.observed: dict[str, Observed] = {}
        self.watcher = DirWatcher()
        self._saving: set[asyncio.Future[None]] = set()
        self._closed = False

    def start(self, trigger_id: str, dispatch_id: str, spec: dict[str, Any],
              pickled: bytes | None = None, fire_count: int = 0,
              restored: bool = False) -> Observed:
        """Begin observing; raises ValueError/TypeError for a built-in spec that is invalid.

        ``restored``: registered before this server started (observing resumes)."""
        trigger = None if pickled is not None else from_dict(spec)
        if trigger is not None:
            trigger.lattice_dispatch_id = dispatch_id
        obs = Observed(trigger_id, dispatch_id, str(spec.get("name") or "trigger"), dict(spec),
                       trigger, pickled, [str(x) for x in spec.get("new_dispatch_ids") or []],
                       fire_count, last_fired=_opt_text(spec.get("last_fired")),
                       last_error=_opt_text(spec.get("last_error")), restored=restored)
        self.observed[trigger_id] = obs
        obs.task = asyncio.create_task(self._run(obs), name=f"trigger-{trigger_id}")
        return obs

    async def wait_observing(self, obs: Observed) -> str | None:
        """None once ``obs`` observes; else why it could not (it is then inactive)."""
        assert obs.task is not None
        ready = asyncio.ensure_future(obs.ready.wait())
        try:
            await asyncio.wait({ready, obs.task}, timeout=READY_TIMEOUT_S,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if obs.ready.is_set() and obs.active:
            return None
        if obs.active:  # neither ready nor failed in time
            obs.stopped.set()
            await asyncio.gather(obs.task, return_exceptions=True)
            return f"the trigger did not start observing within {READY_TIMEOUT_S:.0f} s"
        return obs.reason

    async def stop_dispatches(self, dispatch_ids: list[str]) -> int:
        """Stop every trigger of these dispatches; when it returns no trigger fires again."""
        return await self.stop_observed(
            [o for o in self.observed.values() if o.dispatch_id in dispatch_ids and o.active])

    async def stop_observed(self, targets: list[Observed]) -> int:
        """Stop these triggers (``trigger.stop()`` on a registered one stops only itself)."""
        targets = [o for o in targets if o.active]
        for o in targets:
            o.stopped.set()
        await asyncio.gather(*(o.task for o in targets if o.task), return_exceptions=True)
        for o in targets:
            o.active, o.reason = False, "stopped"
            await self._persist(o)
        return len(targets)

    async def close(self) -> None:
        """Server shutdown: stop observing but keep triggers active in the store, with what
        they counted since their last fire (a DirTrigger's events towards its batch_size).
        Replicas call it before they give their leases up (a save needs the lease); once
        closed, a second call does nothing."""
        if self._closed:
            return
        self._closed = True
        for o in self.observed.values():
            o.stopped.set()
        await asyncio.gather(*(o.task for o in self.observed.values() if o.task), *self._saving,
                             return_exceptions=True)
        await asyncio.gather(*(self._persist(o) for o in self.observed.values()
                               if o.active and o.trigger is not None), return_exceptions=True)
        await asyncio.to_thread(self.watcher.close)

    async def _fire_once(self, obs: Observed) -> str | None:
        if obs.stopped.is_set():
            return None
        new_id = await self._fire(obs.dispatch_id, obs.trigger_id, obs.fire_count + 1)
        obs.fire_count += 1
        obs.last_fired = datetime.now(UTC).isoformat()
        if new_id != obs.dispatch_id:
            obs.new_dispatch_ids.append(new_id)
        await self._persist(obs)
        return new_id

    async def _observe(self, obs: Observed) -> str:
        def fire() -> Awaitable[str | None]:
            return self._fire_once(obs)

        def report_error(text: str | None) -> None:
            if text != obs.last_error:
                obs.last_error = text
                self._persist_later(obs)

        def next_fire(at: float | None) -> None:
            loop = asyncio.get_running_loop()
            obs.next_fire = None if at is None else datetime.fromtimestamp(
                time.time() + at - loop.time(), UTC).isoformat()

        def counted() -> None:
            if obs.save_due is None:
                obs.save_due = asyncio.get_running_loop().call_later(SAVE_DELAY_S, save)

        def save() -> None:
            obs.save_due = None
            self._persist_later(obs)

        if obs.trigger is not None:
            ctx = Observing(fire, obs.stopped, obs.ready, self.watcher, report_error, next_fire,
                            obs.restored, counted)
            return await observe(obs.trigger, ctx)
        assert obs.pickled is not None

        def on_spec(spec: dict[str, Any]) -> None:
            obs.spec = spec

        return await run_host(obs.pickled, obs.dispatch_id, fire, obs.stopped, obs.ready, on_spec)

    def _persist_later(self, obs: Observed) -> None:
        """Save a changed report without making the observer wait for the store."""
        task = asyncio.ensure_future(self._persist(obs))
        self._saving.add(task)
        task.add_done_callback(self._saving.discard)

    async def _run(self, obs: Observed) -> None:
        try:
            reason = await self._observe(obs)
        except asyncio.CancelledError:
            raise
        except LookupError as exc:
            reason = f"dispatch {obs.dispatch_id} no longer exists ({exc})"
        except FireRefused as exc:  # its user was revoked
            reason = str(exc)
        except (TriggerLoadError, OSError) as exc:
            reason = f"cannot observe: {type(exc).__name__}: {exc}"
        except Exception as exc:  # a trigger's failure stops that trigger, never the server
            log.exception("trigger %s failed", obs.trigger_id)
            reason = f"{type(exc).__name__}: {exc}"
        finally:
            if obs.save_due is not None:  # whoever ended it saves it now
                obs.save_due.cancel()
                obs.save_due = None
        if reason != "stopped" or not obs.stopped.is_set():
            log.warning("trigger %s of dispatch %s stopped: %s", obs.trigger_id, obs.dispatch_id, reason)
            obs.active, obs.reason = False, reason
            obs.last_error = obs.last_error if reason == "stopped" else reason
            await self._persist(obs)


def _opt_text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
