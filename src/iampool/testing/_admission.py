"""The gateway's login decision, by mode: what the password must be, and (Redshift) whether the
database user exists or is created, as the real service decides."""

from __future__ import annotations

from dataclasses import dataclass
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

__all__ = ["Admission"]


@dataclass(frozen=True)
class Admission:
    """Checks one gateway's logins against what the AWS stand-in issued."""

    mode: Mode
    authority: CredentialAuthority
    users: UpstreamUsers
    region: str

    async def judge(
        self, user: str, secret: str, database: str | None, *, host: str, port: int, now: datetime
    ) -> RejectReason | None:
        """``None`` when the service would let ``user`` in with ``secret``, else why not.

        In Redshift mode a valid password for a user that does not exist creates the user when
        it was issued to (``auto_create``: Serverless, ``AutoCreate``), else is
        ``no_such_user``, as Redshift refuses such a login.
        """
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
