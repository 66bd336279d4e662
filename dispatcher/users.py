"""Who sends a request: the built-in admin (the server's own token) or a user with a token of
its own (issue #26).

Single-user mode is the default and needs nothing: the token ``covalent start`` generates (or
``--token``) is the *built-in admin*, named ``admin``, and every dispatch belongs to it. An
admin adds users (``covalent user add NAME [--admin]``); each gets a random token of 32 bytes,
shown once. The store keeps only its sha256: such a token cannot be guessed, so a slow
password hash (scrypt, argon2) would add nothing but a cost per request, and an unsalted hash
lets a request's token be found by one index lookup. The found row's hash is compared again in
constant time.

Every request with a user token reads that user's row: a revoked token is refused at the
next request, on every dispatcher sharing the database, with no restart. ``last_used_at`` is
written at most once a minute per user.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from .errors import DispatcherError, InvalidRequest, Unauthorized
from .protocol import now_iso
from .store import DispatchStore
from .store.base import BUILTIN_OWNER, UserRecord

NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
TOUCH_EVERY = 60.0  # seconds between two writes of a user's last_used_at


@dataclass(frozen=True, slots=True)
class User:
    """Who a request acts as."""

    name: str
    admin: bool


BUILTIN = User(BUILTIN_OWNER, admin=True)
USER = web.RequestKey("covalent_user", User)


def user_of(request: web.Request) -> User:
    """The user the token guard found for ``request`` (the built-in admin without a token)."""
    found = request.get(USER)
    return found if isinstance(found, User) else BUILTIN


def may_see(user: User, owner: str | None) -> bool:
    """Whether ``user`` may see what ``owner`` owns (None: nothing is there)."""
    return owner is not None and (user.admin or owner == user.name)


def token_hash(token: str) -> str:
    """The sha256 of a token, as stored (hex).

    >>> token_hash("abc")[:16]
    'ba7816bf8f01cfea'
    """
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def check_name(name: object) -> str:
    """A new user's name, or InvalidRequest saying what one looks like.

    >>> check_name("ada.l")
    'ada.l'
    >>> check_name("admin")
    Traceback (most recent call last):
    ...
    dispatcher.errors.InvalidRequest: 'admin' is the built-in admin (the server's own token); choose another name
    """
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise InvalidRequest(f"a user name is 1-64 lower-case letters, digits, '.', '_' or '-' "
                             f"(starting with a letter or digit), not {name!r:.80}")
    if name == BUILTIN_OWNER:
        raise InvalidRequest(f"{name!r} is the built-in admin (the server's own token); "
                             "choose another name")
    return name


async def live_row(store: DispatchStore, name: str) -> UserRecord | None:
    """The row of the user named ``name`` if it is live (not revoked), else None."""
    row = await store.user_by_name(name)
    return row if row is not None and row.revoked_at is None else None


class Accounts:
    """Find users by token or name in the store; make new ones."""

    def __init__(self, store: Callable[[], DispatchStore]) -> None:
        self._store = store
        self._touched: dict[str, float] = {}

    async def by_token(self, token: str) -> User | None:
        """The live (not revoked) user whose token this is, else None."""
        digest = token_hash(token)
        row = await self._store().user_by_hash(digest)
        if row is None or row.revoked_at is not None \
                or not hmac.compare_digest(row.token_hash, digest):
            return None
        await self._touch(row.name)
        return User(row.name, row.admin)

    async def live_row(self, name: str) -> UserRecord | None:
        """The row of the live user named ``name``, read without touching it."""
        return await live_row(self._store(), name)

    async def by_name(self, name: str) -> User | None:
        """The live user named ``name`` (a browser session's), else None."""
        if name == BUILTIN_OWNER:
            return BUILTIN
        row = await live_row(self._store(), name)
        if row is None:
            return None
        await self._touch(row.name)
        return User(row.name, row.admin)

    async def add(self, name: object, admin: bool) -> tuple[UserRecord, str] | None:
        """A new user and its token (shown once, never stored); None if the name is taken."""
        token = secrets.token_urlsafe(32)
        record = UserRecord(check_name(name), token_hash(token), admin, now_iso())
        if not await self._store().add_user(record):
            return None
        return record, token

    async def _touch(self, name: str) -> None:
        now = time.monotonic()
        if now - self._touched.get(name, -TOUCH_EVERY) >= TOUCH_EVERY:
            self._touched[name] = now
            await self._store().touch_user(name, now_iso())


ACCOUNTS = web.AppKey("accounts", Accounts)


RECHECK_S = 5.0  # how often a long poll or an event stream asks whether its user is still live


async def still_live(request: web.Request) -> bool:
    """Whether the user ``request`` was let in as is still live: a long poll or an event
    stream asks again before it answers, and every few seconds, so a user revoked meanwhile
    is sent nothing more."""
    user = user_of(request)
    if user.name == BUILTIN_OWNER:
        return True
    try:  # read without touching last_used_at: an open tab is not a use
        return await request.app[ACCOUNTS].live_row(user.name) is not None
    except DispatcherError:  # the store out for a moment: the next check decides
        return True


async def answer_only_the_live(request: web.Request) -> None:
    """Raise Unauthorized if the request's user was revoked since it was let in."""
    if not await still_live(request):
        raise Unauthorized("this user was revoked while the request waited; a revoked token "
                           "opens nothing")
