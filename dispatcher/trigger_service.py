"""Connect the trigger supervisor to the store and the runner: register, fire, persist, restore.

A trigger's action (``fire``): a pending (NEW_OBJECT) dispatch is started under its own id;
any other is redispatched server-side as a new dispatch of the same graph and inputs.
Built-in triggers are rebuilt from JSON; a custom trigger subclass arrives pickled and is kept
as bytes: only its own process (``triggers.host``) ever unpickles it, never the server.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from triggers import Observed, TriggerSupervisor
from triggers.supervisor import FireRefused

from . import dispatches
from .errors import DispatchNotFound, InvalidRequest, TriggerNotFound, Unavailable
from .protocol import now_iso
from .runner import Runner
from .state import PENDING
from .store import DispatchStore, SqlStore, TriggerRecord
from .store.base import BUILTIN_OWNER
from .users import live_row
from .store.leases import fenced, trigger_resource
from .store.sql import Db
from .users import BUILTIN, User, may_see

if TYPE_CHECKING:
    from .replica import Replica


STOP_WAIT_S = 20.0  # a lease's 10 s, a look for unowned leases every 2.5 s, and the resume


class TriggerService:
    """The dispatcher's triggers: one supervisor, persisted in the store."""

    def __init__(self, store: DispatchStore, runner: Runner) -> None:
        self.store = store
        self.runner = runner
        self.supervisor = TriggerSupervisor(self.fire, self.persist)
        self.fired = 0  # fires since the server started (/metrics)
        self.replica: Replica | None = None  # replicas: a trigger is observed where it is leased
        # Replicas: tell the others to stop these triggers if they observe them (``Notices``).
        self.announce_stop: Callable[[list[str]], Awaitable[None]] | None = None

    async def fire(self, dispatch_id: str, trigger_id: str = "", number: int = 0) -> str:
        """Fire ``number`` of a trigger: the id of the dispatch it started. Replicas: each
        fire number is recorded once, under the trigger's lease (``trigger_fires``); one a
        replica that lost the lease fired already is not fired again."""
        await self._check_owner_live(dispatch_id)
        new_id = None
        if self.replica is not None and trigger_id:
            new_id = await self._claim(trigger_id, number)
            if new_id is None or not new_id[1]:
                return new_id[0] if new_id else dispatch_id
        self.fired += 1
        row = await self.store.get_dispatch(dispatch_id)
        if row is None:
            raise DispatchNotFound(dispatch_id)
        if row.status == PENDING and await dispatches.start_pending(
                self.store, self.runner, dispatch_id):
            return dispatch_id
        return await dispatches.clone(self.store, self.runner, row,
                                      new_id[0] if new_id else None)

    async def _check_owner_live(self, dispatch_id: str) -> None:
        """Raise FireRefused (the trigger stops, saying why) if the user a trigger's dispatch
        belongs to (its owner: a trigger belongs to its dispatch's owner) was revoked:
        revoking a user ends what runs as them."""
        owner = (await self.store.owners([dispatch_id])).get(dispatch_id)
        if owner is None or owner == BUILTIN_OWNER:
            return
        if await live_row(self.store, owner) is None:
            raise FireRefused(f"its user {owner!r} was revoked: it fires no more")

    async def _claim(self, trigger_id: str, number: int) -> tuple[str, bool] | None:
        """(dispatch id of fire ``number``, claimed now); None if the lease is gone."""
        assert self.replica is not None
        resource = trigger_resource(trigger_id)
        held = self.replica.owner_epoch(resource)
        if held is None:
            self.drop(trigger_id)
            return None
        new_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"covalent-trigger:{trigger_id}/{number}"))
        sql, args = fenced("INSERT INTO trigger_fires(trigger_id, tick, dispatch_id, fired_at)"
                           " SELECT ?, ?, ?, ? WHERE TRUE", [trigger_id, str(number), new_id,
                                                             now_iso()], resource, *held)

        def claim(db: Db) -> int:
            return int(db.execute(sql + " ON CONFLICT DO NOTHING", args).rowcount)

        if await cast(SqlStore, self.store)._write(claim):
            return new_id, True
        if self.replica.owner_epoch(resource) is None:
            self.drop(trigger_id)
            return None
        return new_id, False  # fired already, by the replica that held it before

    async def persist(self, obs: Observed) -> None:
        spec = json.dumps(obs.current_spec())
        await self.store.save_trigger(obs.trigger_id, spec, obs.active, obs.fire_count, obs.reason)

    async def register(self, body: dict[str, Any], dispatch_id: str | None = None,
                       user: User = BUILTIN) -> str:
        """Store and start observing a trigger from its registration body; it belongs to the
        owner of its dispatch, and so do the dispatches it starts.

        Raises:
            InvalidRequest: a malformed body, or a trigger that cannot observe (the reason).
            DispatchNotFound: the trigger names an unknown dispatch (or one ``user`` may not see).
        """
        spec, pickled = _decode(body)
        target = dispatch_id or spec.get("lattice_dispatch_id")
        if not isinstance(target, str) or not target:
            raise InvalidRequest("the trigger has no lattice_dispatch_id")
        dispatches.check_id(target)
        owner = (await self.store.owners([target])).get(target)
        if not may_see(user, owner):
            raise DispatchNotFound(target)
        assert owner is not None
        spec["lattice_dispatch_id"] = target
        trigger_id = str(uuid.uuid4())
        name = str(spec.get("name") or "trigger")[:200]
        if self.replica is not None:  # observed here: leased before anyone can see it
            await self.replica.acquire(trigger_resource(trigger_id))
        await self.store.add_trigger(TriggerRecord(trigger_id, target, name, json.dumps(spec),
                                                   pickled, True, 0, "", now_iso(), owner))
        try:
            obs = self.supervisor.start(trigger_id, target, spec, pickled)
        except (ValueError, TypeError, KeyError) as exc:
            await self.store.delete_trigger(trigger_id)
            raise InvalidRequest(f"cannot build trigger: {type(exc).__name__}: {exc}") from None
        failure = await self.supervisor.wait_observing(obs)
        if failure is not None:  # refused with the reason, never silently inactive
            self.supervisor.observed.pop(trigger_id, None)
            await self.store.delete_trigger(trigger_id)
            raise InvalidRequest(f"the trigger {failure}" if failure.startswith("cannot observe")
                                 else f"the trigger cannot observe: {failure}")
        return trigger_id

    async def take(self, trigger_id: str, epoch: int) -> None:
        """Replicas: observe a trigger whose lease this replica took (another one stopped)."""
        row = next((r for r in await self.store.active_triggers() if r.trigger_id == trigger_id),
                   None)
        if row is None or trigger_id in self.supervisor.observed:
            return
        obs = self.supervisor.start(row.trigger_id, row.dispatch_id, row.spec, row.pickled,
                                    row.fire_count, restored=True)
        await self.supervisor.wait_observing(obs)

    def drop(self, trigger_id: str) -> None:
        """Replicas: the lease is gone; stop observing here, leaving the trigger active."""
        obs = self.supervisor.observed.pop(trigger_id, None)
        if obs is not None:
            obs.stopped.set()

    async def restore(self) -> int:
        """Observe again every trigger that was active when the server stopped."""
        rows = await self.store.active_triggers()
        for row in rows:
            try:
                obs = self.supervisor.start(row.trigger_id, row.dispatch_id, row.spec, row.pickled,
                                            row.fire_count, restored=True)
            except (ValueError, TypeError, KeyError) as exc:
                await self.store.save_trigger(row.trigger_id, row.spec_json, False, row.fire_count,
                                              f"cannot rebuild trigger: {type(exc).__name__}: {exc}")
                continue
            await self.supervisor.wait_observing(obs)  # a failure is recorded as its reason
        return len(rows)

    async def listing(self, active_only: bool = False, owner: str | None = None
                      ) -> list[dict[str, Any]]:
        """Every stored trigger (of ``owner`` only, if given; live state for those being
        observed)."""
        infos = [self._info(row) for row in await self.store.all_triggers()
                 if owner is None or row.owner == owner]
        return [info for info in infos if info["active"] or not active_only]

    async def owner_of(self, trigger_id: str) -> str | None:
        """Whose trigger this is (None: no such trigger)."""
        for row in await self.store.all_triggers():
            if row.trigger_id == trigger_id:
                return row.owner
        return None

    async def info(self, trigger_id: str) -> dict[str, Any]:
        """One trigger (live state while it is observed), e.g. the dispatches it started.

        Raises:
            TriggerNotFound: no trigger has that id.
        """
        live = self.supervisor.observed.get(trigger_id)
        if live is not None:
            return live.info()
        for row in await self.store.all_triggers():
            if row.trigger_id == trigger_id:
                return self._info(row)
        raise TriggerNotFound(f"no trigger with id {trigger_id!r}")

    def _info(self, row: TriggerRecord) -> dict[str, Any]:
        live = self.supervisor.observed.get(row.trigger_id)
        if live is not None:
            return live.info()
        spec = row.spec
        return {"trigger_id": row.trigger_id, "name": row.name, "dispatch_id": row.dispatch_id,
                "active": row.active, "fire_count": row.fire_count, "reason": row.reason,
                "new_dispatch_ids": spec.get("new_dispatch_ids", []),
                "last_fired": spec.get("last_fired"), "next_fire": None,
                "last_error": spec.get("last_error") or (row.reason if not row.active
                                                         and row.reason != "stopped" else None),
                "trigger": spec}

    async def stop(self, dispatch_ids: list[str]) -> int:
        """Stop every trigger of these dispatches (``ct.stop_triggers``); how many were active.
        On replicas, wherever they are observed."""
        for d in dispatch_ids:
            if await self.store.get_status(dispatches.check_id(d)) is None:
                raise DispatchNotFound(d)
        stopped = await self.supervisor.stop_dispatches(dispatch_ids)
        return stopped + await self._stop_elsewhere(lambda r: r.dispatch_id in dispatch_ids)

    async def stop_one(self, trigger_id: str) -> bool:
        """Stop one trigger (``trigger.stop()`` on the user's registered object); whether it
        was active (on replicas, wherever it is observed).

        Raises:
            TriggerNotFound: no trigger has that id.
        """
        obs = self.supervisor.observed.get(trigger_id)
        if obs is None and await self.owner_of(trigger_id) is None:
            raise TriggerNotFound(f"no trigger with id {trigger_id!r}")
        if obs is not None:
            return await self.supervisor.stop_observed([obs]) == 1
        return await self._stop_elsewhere(lambda r: r.trigger_id == trigger_id) == 1

    async def stop_here(self, trigger_ids: list[str]) -> int:
        """Replicas: another replica was asked to stop these; those observed here stop."""
        return await self.supervisor.stop_observed(
            [o for t in trigger_ids if (o := self.supervisor.observed.get(t)) is not None])

    async def _stop_elsewhere(self, wanted: Callable[[TriggerRecord], bool]) -> int:
        """Replicas: stop the active triggers ``wanted`` picks that another replica observes
        (a load balancer sends ``trigger.stop()`` to any replica). The replicas are told
        (``announce_stop``), again every second in case a notice was missed, until the store
        says each one stopped; one this replica took over meanwhile is stopped here. One whose
        replica died stops where its lease is taken over, within ``STOP_WAIT_S``. How many.

        Raises:
            Unavailable: not stopped within ``STOP_WAIT_S``.
        """
        if self.replica is None or self.announce_stop is None:
            return 0
        pending = {r.trigger_id for r in await self.store.active_triggers() if wanted(r)}
        count = len(pending)
        loop = asyncio.get_running_loop()
        deadline, again = loop.time() + STOP_WAIT_S, 0.0
        while pending:  # (those observed here were stopped by the caller)
            if loop.time() >= deadline:
                raise Unavailable(f"trigger {', '.join(sorted(pending))} is observed by another "
                                  f"replica that did not stop it within {STOP_WAIT_S:g} s; "
                                  "ask again")
            if loop.time() >= again:
                await self.announce_stop(sorted(pending))
                again = loop.time() + 1.0
            await asyncio.sleep(0.05)  # another process acts on it: nothing to await but the row
            await self.stop_here(sorted(pending))  # taken over here meanwhile
            pending &= {r.trigger_id for r in await self.store.active_triggers()}
        return count


def _decode(body: dict[str, Any]) -> tuple[dict[str, Any], bytes | None]:
    """The trigger's JSON spec and, for a custom trigger, its pickle (kept as bytes)."""
    spec = body.get("trigger")
    if not isinstance(spec, dict):
        raise InvalidRequest("body needs a 'trigger' object (BaseTrigger.to_dict())")
    pickled_b64 = body.get("pickled")
    if pickled_b64 is None:
        return dict(spec), None
    if not isinstance(pickled_b64, str):
        raise InvalidRequest("'pickled' must be a base64 string or null")
    try:
        return dict(spec), base64.b64decode(pickled_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(f"'pickled' is not base64: {exc}") from None
