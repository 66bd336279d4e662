"""``/api/v1/users`` and ``/api/v1/whoami`` (issue #26): the users of a shared dispatcher.

| method and path | who | answer |
| --- | --- | --- |
| ``GET /whoami`` | anyone let in | ``{"name", "admin"}``: who this token (or session) acts as |
| ``GET /users`` | admins | ``{"users": [{"name", "admin", "created_at", "revoked_at", "last_used_at"}]}`` |
| ``POST /users`` ``{"name", "admin"}`` | admins | 201 ``{"name", "admin", "created_at", "token"}``: the only time the token is shown; 409 if the name was ever used |
| ``POST /users/{name}/revoke`` | admins | ``{"name", "revoked_at"}``: its token opens nothing from the next request on; 404 if no such user |

Managing users takes a token (``covalent user ...`` sends it): a browser session may not.
"""

from __future__ import annotations

from aiohttp import web

from covalent import wire

from .authz import admin_only
from .errors import Forbidden, InvalidRequest, UserExists, UserNotFound
from .keys import STORE
from .protocol import now_iso
from .store.base import BUILTIN_OWNER
from .routes import _json_body
from .sessions import VIA_SESSION
from .users import ACCOUNTS, user_of

routes = web.RouteTableDef()


def _by_token(request: web.Request) -> None:
    if request.get(VIA_SESSION):
        raise Forbidden("users are managed with a token (covalent user ...), not from a browser")


@routes.get(wire.API + "/whoami")
async def whoami(request: web.Request) -> web.Response:
    user = user_of(request)
    return web.json_response({"name": user.name, "admin": user.admin})


@routes.get(wire.API + "/users")
@admin_only
async def list_users(request: web.Request) -> web.Response:
    users = await request.app[STORE].list_users()
    return web.json_response({"users": [u.to_json() for u in users]})


@routes.post(wire.API + "/users")
@admin_only
async def add_user(request: web.Request) -> web.Response:
    _by_token(request)
    body = await _json_body(request)
    admin = body.get("admin", False)
    if not isinstance(admin, bool):
        raise InvalidRequest("admin must be true or false")
    made = await request.app[ACCOUNTS].add(body.get("name"), admin)
    if made is None:
        raise UserExists(f"there is a user named {body.get('name')!r} already (names are never "
                         "reused, even once revoked)")
    record, token = made
    return web.json_response({**record.to_json(), "token": token}, status=201)


@routes.post(wire.API + "/users/{name}/revoke")
@admin_only
async def revoke_user(request: web.Request) -> web.Response:
    _by_token(request)
    name = request.match_info["name"]
    if name == BUILTIN_OWNER:
        raise InvalidRequest(f"{name!r} is the built-in admin, the dispatcher's own token: it "
                             "cannot be revoked; to change it, stop the dispatcher and start it "
                             "with another token (covalent start --token-file FILE)")
    if not await request.app[STORE].revoke_user(name, now_iso()):
        raise UserNotFound(f"no user named {name!r}")
    found = await request.app[STORE].user_by_name(name)
    return web.json_response({"name": name, "revoked_at": found.revoked_at if found else None})

