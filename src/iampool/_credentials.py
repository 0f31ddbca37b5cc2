"""What every backend hands a driver: ``DbCredentials``, behind the ``DbAuth`` protocol."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from ._config import AwsIamConfig

__all__ = ["DbAuth", "DbCredentials"]


@dataclass(frozen=True, slots=True)
class DbCredentials:
    """A login for one database endpoint, valid until ``expires_at`` (timezone-aware, UTC).

    ``password`` is an RDS auth token or a Redshift temporary password; the repr redacts it.
    ``host`` and ``port`` are the endpoint the credentials are bound to when the backend knows it
    (RDS tokens are signed for one host:port; Redshift endpoints may be discovered via the API).
    """

    user: str
    password: str = field(repr=False)
    host: str | None
    port: int | None
    database: str | None
    expires_at: datetime

    def __repr__(self) -> str:
        return (
            f"DbCredentials(user={self.user!r}, password='<redacted>', host={self.host!r}, "
            f"port={self.port!r}, database={self.database!r}, "
            f"expires_at={self.expires_at.isoformat()!r})"
        )


@runtime_checkable
class DbAuth(Protocol):
    """Mints database credentials from AWS IAM; one implementation per backend.

    ``credentials()`` is cheap when warm (a cached value) and safe to await from many tasks at
    once: concurrent misses share one AWS call. ``invalidate()`` drops the cached password after
    the database refused it, so the next call mints a fresh one.
    """

    @property
    def config(self) -> AwsIamConfig:
        """The configuration this authenticator serves."""
        ...

    async def credentials(self) -> DbCredentials:
        """Current credentials for the endpoint; raises ``CredentialError`` when AWS fails."""
        ...

    def invalidate(self) -> None:
        """Forget the cached password so the next ``credentials()`` call mints a new one."""
        ...
