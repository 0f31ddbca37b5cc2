"""The gateway's login decision, by mode: what the password must be, and (Redshift) whether the
database user exists or is created, as the real service decides."""

from __future__ import annotations

import hmac
import threading
from dataclasses import dataclass, field
from datetime import datetime

from ._front import Mode
from ._users import UpstreamUsers
from ._verify import (
    CredentialAuthority,
    RejectReason,
    verify_dsql_token,
    verify_rds_token,
    verify_redshift_password,
)

__all__ = ["Admission", "Passwords"]


class Passwords:
    """Password mode's own user table: each user's one current password, as a database keeps
    it (thread-safe: tests set passwords, the gateway's loop checks them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._passwords: dict[str, str] = {}

    def set(self, user: str, password: str) -> None:
        """``ALTER USER ... PASSWORD``: from now on only ``password`` lets ``user`` in."""
        with self._lock:
            self._passwords[user] = password

    def forget(self, user: str) -> None:
        """No password lets ``user`` in any more."""
        with self._lock:
            self._passwords.pop(user, None)

    def check(self, user: str, password: str) -> RejectReason | None:
        """``None`` when ``password`` is ``user``'s, else ``bad_password``."""
        with self._lock:
            expected = self._passwords.get(user)
        if expected is None or not hmac.compare_digest(expected.encode(), password.encode()):
            return "bad_password"
        return None


@dataclass(frozen=True)
class Admission:
    """Checks one gateway's logins against what the AWS stand-in issued."""

    mode: Mode
    authority: CredentialAuthority
    users: UpstreamUsers
    region: str
    passwords: Passwords = field(default_factory=Passwords)

    async def judge(
        self, user: str, secret: str, database: str | None, *, host: str, port: int, now: datetime
    ) -> RejectReason | None:
        """``None`` when the service would let ``user`` in with ``secret``, else why not.

        In Redshift mode a valid password for a user that does not exist creates the user when
        it was issued to (``auto_create``: Serverless, ``AutoCreate``), else is
        ``no_such_user``, as Redshift refuses such a login.
        """
        if self.mode == "password":
            return self.passwords.check(user, secret)
        signing_key = self.authority.signing_key
        if self.mode == "dsql":
            return verify_dsql_token(
                secret, user=user, host=host, region=self.region, signing_key=signing_key, now=now
            )
        if self.mode == "redshift":
            reason = verify_redshift_password(
                secret,
                user=user,
                database=database,
                lookup=self.authority.redshift_password,
                now=now,
            )
            return reason if reason is not None else await self._redshift_user(user, secret)
        return verify_rds_token(
            secret,
            user=user,
            host=host,
            port=port,
            region=self.region,
            signing_key=signing_key,
            now=now,
        )

    async def _redshift_user(self, user: str, password: str) -> RejectReason | None:
        """Make sure the database user exists, as Redshift does at an IAM login."""
        if await self.users.exists(user):
            return None
        issued = self.authority.redshift_password(user, password)
        if getattr(issued, "auto_create", False):
            await self.users.ensure(user)
            return None
        return "no_such_user"
