"""Connect the trigger supervisor to the store and the runner: register, fire, persist, restore.

A trigger's action (``fire``): a pending (NEW_OBJECT) dispatch is started under its own id;
any other is redispatched server-side as a new dispatch of the same graph and inputs.
Built-in triggers are rebuilt from JSON; a custom trigger subclass arrives pickled and is
unpickled here, in the server: trigger code is user code that the server runs by design
(registering one needs the same token as dispatching).
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from typing import Any

import cloudpickle

from triggers.base import BaseTrigger
from triggers.registry import from_dict
from triggers.supervisor import Observed, TriggerSupervisor

from . import dispatches
from .errors import DispatchNotFound, InvalidRequest
from .execute import now_iso
from .runner import Runner
from .store import SqliteStore


class TriggerService:
    """The dispatcher's triggers: one supervisor, persisted in the store."""

    def __init__(self, store: SqliteStore, runner: Runner) -> None:
        self.store = store
        self.runner = runner
        self.supervisor = TriggerSupervisor(self.fire, self.persist)

    async def fire(self, dispatch_id: str) -> str:
        row = await self.store.run(self.store.get_dispatch, dispatch_id)
        if row is None:
            raise DispatchNotFound(dispatch_id)
        if row["status"] == "NEW_OBJECT" and dispatch_id not in self.runner.runs:
            return await dispatches.start_pending(self.store, self.runner, dispatch_id)
        return await dispatches.clone(self.store, self.runner, row)

    async def persist(self, obs: Observed) -> None:
        spec = json.dumps(obs.trigger.to_dict())
        await self.store.run(self.store.save_trigger, obs.trigger_id, spec, obs.active,
                             obs.fire_count, obs.reason)

    async def register(self, body: dict[str, Any], dispatch_id: str | None = None) -> str:
        """Store and start observing a trigger from its registration body."""
        trigger, pickled = _decode(body)
        if dispatch_id is not None:
            trigger.lattice_dispatch_id = dispatch_id
        if not trigger.lattice_dispatch_id:
            raise InvalidRequest("the trigger has no lattice_dispatch_id")
        dispatches.check_id(trigger.lattice_dispatch_id)
        if await self.store.run(self.store.get_status, trigger.lattice_dispatch_id) is None:
            raise DispatchNotFound(trigger.lattice_dispatch_id)
        trigger_id = str(uuid.uuid4())
        await self.store.run(self.store.add_trigger, trigger_id, trigger.lattice_dispatch_id,
                             type(trigger).__name__, json.dumps(trigger.to_dict()), pickled, now_iso())
        await self._observe(trigger_id, trigger, custom=pickled is not None)
        return trigger_id

    async def _observe(self, trigger_id: str, trigger: BaseTrigger, *, custom: bool,
                       fire_count: int = 0) -> None:
        """Start observing; return once it observes, so the next file change is seen."""
        obs = self.supervisor.start(trigger_id, trigger, custom=custom, fire_count=fire_count)
        try:
            await asyncio.wait_for(obs.ready.wait(), 10)
        except TimeoutError:
            pass

    async def restore(self) -> int:
        """Observe again every trigger that was active when the server stopped."""
        rows = await self.store.run(self.store.active_triggers)
        for trigger_id, spec, pickled, fire_count in rows:
            try:
                trigger = cloudpickle.loads(pickled) if pickled else from_dict(json.loads(spec))
                if pickled:
                    trigger.new_dispatch_ids = json.loads(spec).get("new_dispatch_ids", [])
            except Exception as exc:  # a custom trigger whose module is gone: stop it, say why
                await self.store.run(self.store.save_trigger, trigger_id, spec, False, fire_count,
                                     f"cannot rebuild trigger: {type(exc).__name__}: {exc}")
                continue
            await self._observe(trigger_id, trigger, custom=pickled is not None,
                                fire_count=fire_count)
        return len(rows)

    async def listing(self, active_only: bool = False) -> list[dict[str, Any]]:
        """Every stored trigger (live state for those being observed)."""
        out = []
        for row in await self.store.run(self.store.all_triggers):
            live = self.supervisor.observed.get(row["trigger_id"])
            if live is not None:
                info = live.info()
            else:
                spec = json.loads(row["spec"])
                info = {"trigger_id": row["trigger_id"], "name": row["name"],
                        "dispatch_id": row["dispatch_id"], "active": bool(row["active"]),
                        "fire_count": row["fire_count"], "reason": row["reason"] or "",
                        "new_dispatch_ids": spec.get("new_dispatch_ids", []), "trigger": spec}
            if info["active"] or not active_only:
                out.append(info)
        return out

    async def stop(self, dispatch_ids: list[str]) -> int:
        for d in dispatch_ids:
            if await self.store.run(self.store.get_status, dispatches.check_id(d)) is None:
                raise DispatchNotFound(d)
        return await self.supervisor.stop_dispatches(dispatch_ids)


def _decode(body: dict[str, Any]) -> tuple[BaseTrigger, bytes | None]:
    spec = body.get("trigger")
    if not isinstance(spec, dict):
        raise InvalidRequest("body needs a 'trigger' object (BaseTrigger.to_dict())")
    pickled_b64 = body.get("pickled")
    try:
        if pickled_b64:
            pickled = base64.b64decode(pickled_b64, validate=True)
            trigger = cloudpickle.loads(pickled)
            if not isinstance(trigger, BaseTrigger):
                raise TypeError(f"expected a BaseTrigger, got {type(trigger).__name__}")
            return trigger, pickled
        return from_dict(spec), None
    except (ValueError, TypeError, KeyError, AttributeError, ImportError) as exc:
        raise InvalidRequest(f"cannot build trigger: {type(exc).__name__}: {exc}") from None
