"""Users and owners in both databases (issue #26): who a token is, and whose a dispatch is.

A user's token is never stored: its sha256 (hex) is, unique, so a request's token is found by
one index lookup. A revoked user keeps its row (and its name: a name is never reused, so an
old dispatch never changes hands); its token opens nothing any more.
"""

from __future__ import annotations

from .base import UserRecord
from .sql import Db, SqlBase, chunks, marks

_USER_COLUMNS = "name, token_hash, admin, created_at, revoked_at, last_used_at"


class Users(SqlBase):
    """The ``users`` table, and the owner of each dispatch."""

    async def owners(self, dispatch_ids: list[str]) -> dict[str, str]:
        """The owner of each of these dispatches that exists."""
        return await self._read(self._owners, dispatch_ids)

    def _owners(self, db: Db, dispatch_ids: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for chunk in chunks(dispatch_ids):
            out.update((d, o) for d, o in db.execute(
                f"SELECT dispatch_id, owner FROM dispatches WHERE dispatch_id IN"
                f" ({marks(len(chunk))})", list(chunk)))
        return out

    async def add_user(self, user: UserRecord) -> bool:
        """Store a new user; False if the name is taken (revoked users keep theirs)."""
        return await self._write(self._add_user, user)

    def _add_user(self, db: Db, user: UserRecord) -> bool:
        added = db.execute(f"INSERT INTO users({_USER_COLUMNS}) VALUES (?,?,?,?,?,?)"
                           " ON CONFLICT DO NOTHING",
                           (user.name, user.token_hash, int(user.admin), user.created_at,
                            user.revoked_at, user.last_used_at)).rowcount
        return added == 1

    async def user_by_hash(self, token_hash: str) -> UserRecord | None:
        found = await self._read(self._users, " WHERE token_hash = ?", (token_hash,))
        return found[0] if found else None

    async def user_by_name(self, name: str) -> UserRecord | None:
        found = await self._read(self._users, " WHERE name = ?", (name,))
        return found[0] if found else None

    async def list_users(self) -> list[UserRecord]:
        return await self._read(self._users, " ORDER BY created_at, name", ())

    def _users(self, db: Db, where: str, args: tuple[str, ...]) -> list[UserRecord]:
        return [UserRecord(n, h, bool(a), c, r, u) for n, h, a, c, r, u in db.execute(
            f"SELECT {_USER_COLUMNS} FROM users{where}", args).fetchall()]

    async def revoke_user(self, name: str, when: str) -> bool:
        """Revoke a user's token (for good); False if there is no such user."""
        return await self._write(self._revoke_user, name, when)

    def _revoke_user(self, db: Db, name: str, when: str) -> bool:
        if db.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone() is None:
            return False
        db.execute("UPDATE users SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                   (when, name))
        return True

    async def touch_user(self, name: str, when: str) -> None:
        """Record that the user's token was used at ``when``."""
        await self._write(_touch, name, when)


def _touch(db: Db, name: str, when: str) -> None:
    db.execute("UPDATE users SET last_used_at = ? WHERE name = ?", (when, name))
