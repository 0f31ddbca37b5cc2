"""What every backend hands a driver: ``DbCredentials``, behind the ``DbAuth`` protocol."""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from datetime import datetime
from typing import TYPE_CHECKING, NoReturn, Protocol, runtime_checkable

from ._config import AwsIamConfig

if TYPE_CHECKING:
    from ._sigv4 import Presigned

__all__ = ["DbAuth", "DbCredentials", "RotatingAuth", "refuse_pickling"]


class DbCredentials:
    """A login for one database endpoint, valid until ``expires_at`` (timezone-aware, UTC).

    ``password`` is an RDS auth token or a Redshift temporary password; the repr redacts it.
    ``host`` and ``port`` are the endpoint the credentials are bound to when the backend knows it
    (RDS tokens are signed for one host:port; Redshift endpoints may be discovered via the API).
    Immutable, compared and hashed by value.

    A cached RDS token is kept compact (see ``_sigv4.Presigned``): its text is built when
    ``password`` is read, which a driver does once per new connection. Nothing reachable from
    it can mint more (DESIGN invariant 12): it holds the token, not the AWS credentials that
    signed it. It pickles as its fields, the token as text, and unpickles equal.
    """

    __slots__ = ("_password", "database", "expires_at", "host", "port", "user")

    user: str
    _password: str | Presigned
    host: str | None
    port: int | None
    database: str | None
    expires_at: datetime

    def __init__(
        self,
        user: str,
        password: str | Presigned,
        host: str | None,
        port: int | None,
        database: str | None,
        expires_at: datetime,
    ) -> None:
        initialize = object.__setattr__
        initialize(self, "user", user)
        initialize(self, "_password", password)
        initialize(self, "host", host)
        initialize(self, "port", port)
        initialize(self, "database", database)
        initialize(self, "expires_at", expires_at)

    @property
    def password(self) -> str:
        """The token or temporary password to log in with."""
        password = self._password
        if isinstance(password, str):
            return password
        assert self.host is not None  # a token names its endpoint
        assert self.port is not None
        return password.render(self.host, self.port, self.user)

    def __reduce__(self) -> tuple[type[DbCredentials], tuple[object, ...]]:
        return DbCredentials, self._fields()

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def _fields(self) -> tuple[object, ...]:
        return (self.user, self.password, self.host, self.port, self.database, self.expires_at)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DbCredentials):
            return NotImplemented
        return self is other or self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

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

    def credentials_sync(self, timeout: float | None = None) -> DbCredentials:
        """``credentials()`` for synchronous code (any thread without a running event loop):
        a cached value at once, else it blocks on the one shared mint, at most ``timeout``
        seconds (default: a little more than the cache's ``deadline``), then raises
        ``CredentialError`` (code ``Timeout``) while the mint goes on for others. Raises
        ``RuntimeError`` on iampool's own service thread."""
        ...

    def invalidate(self) -> None:
        """Forget the cached password so the next ``credentials()`` call mints a new one."""
        ...


@runtime_checkable
class RotatingAuth(DbAuth, Protocol):
    """A ``DbAuth`` whose password may change under a running application (a rotated secret):
    a login refused for its password is retried for ``rotation_window`` seconds."""

    @property
    def rotation_window(self) -> float:
        """Seconds a login refused for its password keeps trying (0: retry once, as tokens)."""
        ...

    def refused(self, credentials: DbCredentials) -> bool:
        """The database refused ``credentials``: drop them (once per herd) so that the next
        lookup reads the password again; whether they were dropped."""
        ...


def refuse_pickling(minter: object) -> NoReturn:
    """Raise the ``TypeError`` that pickling ``minter`` (an authenticator, a cache) gets: it
    holds AWS credentials, which must not travel to a queue or another process."""
    raise TypeError(
        f"{type(minter).__name__} cannot be pickled: it holds AWS credentials to mint with. "
        "Pickle its AwsIamConfig and build one in the other process, or pickle the "
        "DbCredentials it returned (a token or password, nothing that can mint more)."
    )
