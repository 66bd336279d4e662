"""What each user may see and do (issue #26): their own dispatches and triggers; admins, all.

One middleware, ``ownership_guard``, runs after the token guard has found the user
(``users.user_of``) and before any handler:

- a route marked ``admin_only`` (the server log, ``/metrics``, the users) answers 403 to
  anyone but an admin: those pages show other users' names and errors;
- a route whose address names a dispatch (``{dispatch_id}``) or a trigger (``{trigger_id}``)
  answers a user who does not own it exactly as it answers an id nobody has (404), never
  403: whether an id exists is nobody else's business. A sublattice dispatch belongs to the
  owner of its parent, so the links between them keep working.

Routes that list, count, resolve or delete many (``GET /``, ``/api/v1/listing``, bulk and
purge deletes, ``/resolve``, ``/triggers``, ``/status``, the listing's event stream) filter
by ``owner_filter`` themselves. A new route that names a dispatch is covered by the
middleware; ``tests/dispatcher/test_users_routes.py`` calls every route of the app as another
user, so one that lists without filtering fails there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web

from .dispatches import check_id
from .errors import DispatchNotFound, Forbidden, TriggerNotFound
from .keys import STORE, TRIGGERS
from .users import may_see, user_of

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Handler)
ADMIN_ONLY = "covalent_admin_only"


def admin_only(handler: H) -> H:
    """Mark a handler as one only admins may call (403 for others)."""
    setattr(handler, ADMIN_ONLY, True)
    return handler


def owner_filter(request: web.Request) -> str | None:
    """The owner a listing is limited to: the user's name, or None (everyone's) for an admin."""
    user = user_of(request)
    return None if user.admin else user.name


async def owner_of_visible(request: web.Request, dispatch_id: str) -> str:
    """The owner of a dispatch the user may see; DispatchNotFound (404) for one they may not,
    exactly as for an id nobody has."""
    owner = (await request.app[STORE].owners([check_id(dispatch_id)])).get(dispatch_id)
    if not may_see(user_of(request), owner):
        raise DispatchNotFound(dispatch_id)
    assert owner is not None
    return owner


async def visible_ids(request: web.Request, dispatch_ids: list[str]) -> list[str]:
    """Those of ``dispatch_ids`` the user may see (all of them for an admin)."""
    if user_of(request).admin:
        return dispatch_ids
    owners = await request.app[STORE].owners(dispatch_ids)
    return [i for i in dispatch_ids if owners.get(i) == user_of(request).name]


@web.middleware
async def ownership_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """403 for a non-admin on an admin-only route; 404 for an id of someone else's."""
    user = user_of(request)
    info = request.match_info
    if getattr(info.handler, ADMIN_ONLY, False) and not user.admin:
        raise Forbidden(f"{request.path} is for admins only: it shows every user's work")
    if user.admin:
        return await handler(request)
    dispatch_id = info.get("dispatch_id")
    if dispatch_id is not None:  # malformed: 404 too, as the handler would say
        await owner_of_visible(request, dispatch_id)
    trigger_id = info.get("trigger_id")
    if trigger_id is not None:
        owner = await request.app[TRIGGERS].owner_of(trigger_id)
        if owner != user.name:
            raise TriggerNotFound(f"no trigger with id {trigger_id!r}")
    return await handler(request)

