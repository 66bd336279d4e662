"""The triggers page (``/triggers``, issue #24): what is registered, for which dispatch, how
often it fired and what it started, when it fired last and fires next, its last error, and a
Stop button (``ct.stop_triggers`` of its dispatch).

It reads what ``GET /api/v1/triggers`` answers (``TriggerService.listing``); the fields a
version of the service does not give (``last_fired``, ``next_fire``, ``last_error``) show "—".
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from ..authz import owner_filter
from ..keys import STORE, TRIGGERS
from .routes import common, origin_name

routes = web.RouteTableDef()
NEW_SHOWN = 5


def describe(spec: dict[str, Any]) -> str:
    """What a trigger watches, in words.

    >>> describe({"name": "TimeTrigger", "time_gap": 90.0})
    'every 90 s'
    >>> describe({"name": "DirTrigger", "dir_path": "/in", "event_names": ["created"], "batch_size": 3})
    'created in /in, fires every 3 events'
    >>> describe({"name": "MyTrigger"})
    'a custom trigger (MyTrigger)'
    """
    kind = spec.get("name")
    if kind == "TimeTrigger" and isinstance(spec.get("time_gap"), int | float):
        gap = float(spec["time_gap"])
        return f"every {gap:g} s" if gap < 120 else f"every {gap / 60:g} min"
    if kind == "DirTrigger":
        events = spec.get("event_names") or []
        events = ", ".join(events) if isinstance(events, list) else str(events)
        batch = spec.get("batch_size") or 1
        every = f", fires every {batch} events" if batch != 1 else ""
        return f"{events or 'events'} in {spec.get('dir_path', '?')}{every}"
    return f"a custom trigger ({kind})" if kind else "a custom trigger"


def iso(value: Any) -> str | None:
    """A time the service gave (ISO text, or seconds since the epoch) as ISO, or None.

    >>> iso(0), iso("2026-01-01T00:00:00+00:00"), iso(None)
    ('1970-01-01T00:00:00+00:00', '2026-01-01T00:00:00+00:00', None)
    """
    if isinstance(value, bool) or value is None or value == "":
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC).isoformat()
    return str(value)


@routes.get("/triggers")
async def trigger_page(request: web.Request) -> web.StreamResponse:
    infos = await request.app[TRIGGERS].listing(False, owner_filter(request))
    store = request.app[STORE]
    names: dict[str, str] = {}
    rows: list[dict[str, Any]] = []
    for t in infos:
        dispatch_id = str(t.get("dispatch_id", ""))
        if dispatch_id not in names:
            names[dispatch_id] = await origin_name(store, dispatch_id)
        found = t.get("trigger")
        spec: dict[str, Any] = found if isinstance(found, dict) else {}
        new = [str(i) for i in t.get("new_dispatch_ids") or []]
        # A fire that found its dispatch pending (disable_run) started that one, not a new one
        if int(t.get("fire_count") or 0) > len(new):
            new.insert(0, dispatch_id)
        rows.append({"t": t, "what": describe(spec), "kind": spec.get("name") or "trigger",
                     "dispatch_name": names[dispatch_id], "new": new[-NEW_SHOWN:][::-1],
                     "more": max(len(new) - NEW_SHOWN, 0), "last_fired": iso(t.get("last_fired")),
                     "next_fire": iso(t.get("next_fire")) if t.get("active") else None,
                     "last_error": t.get("last_error") or ""})
    rows.sort(key=lambda r: (not r["t"].get("active"), str(r["dispatch_name"]),
                             str(r["t"].get("trigger_id"))))
    return aiohttp_jinja2.render_template("triggers.html", request, {
        **common(request), "rows": rows, "active": sum(1 for r in rows if r["t"].get("active"))})
