"""Aurora PostgreSQL through asyncpg: the real ``asyncpg.Pool`` with an awaitable password.

asyncpg awaits a callable ``password`` on every physical connect, so IAM plugs in without a
subclass; the pool's ``connect=`` hook adds the connection-rate cap and the one retry when the
server refuses a token.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlencode

from .._credentials import DbAuth
from ._connect import (
    PG_AUTH_SQLSTATES,
    check_tls_settings,
    connect_rate_for,
    connect_with_retry,
    refuse_owned_kwargs,
    tls_not_offered,
)
from ._dsn import Target, tls_context

if TYPE_CHECKING:
    import asyncpg

__all__ = ["check_settings", "connect", "create_pool"]

T = TypeVar("T")

_OWNED_KWARGS = ("dsn", "host", "port", "user", "password", "passfile", "database")


def _rejection(exc: BaseException) -> str | None:
    """The server's message when asyncpg reports an authentication refusal."""
    if getattr(exc, "sqlstate", None) in PG_AUTH_SQLSTATES:
        return str(exc)
    return None


async def _refusing_plain_text(target: Target, connecting: Awaitable[T]) -> T:
    """asyncpg stops before sending any password when the server declines TLS; say so in our
    terms (its own message is a ConnectionError "rejected SSL upgrade")."""
    try:
        return await connecting
    except ConnectionError as exc:
        if "rejected SSL upgrade" in str(exc):
            raise tls_not_offered(target.endpoint) from None
        raise


def _options_dsn(target: Target) -> str | None:
    """The DSN's other query parameters for asyncpg to read as it reads them (asyncpg settings,
    else server settings), in a DSN without host, port, user or database: those go to asyncpg
    as keywords, so what iampool validated is what asyncpg connects to."""
    return f"postgresql://?{urlencode(target.options)}" if target.options else None


def check_settings(target: Target, driver_kwargs: Mapping[str, Any]) -> None:
    """Refuse keyword arguments iampool sets, an ``ssl=`` without TLS and an unreadable CA
    file (called before any AWS call)."""
    refuse_owned_kwargs(driver_kwargs, _OWNED_KWARGS)
    check_tls_settings(target, driver_kwargs.get("ssl"))


def _settings(target: Target, auth: DbAuth, driver_kwargs: dict[str, Any]) -> dict[str, Any]:
    refuse_owned_kwargs(driver_kwargs, _OWNED_KWARGS)

    async def password() -> str:
        return (await auth.credentials()).password

    return {
        **driver_kwargs,
        "dsn": _options_dsn(target),
        "host": target.host,
        "port": target.port,
        "database": target.database,
        "user": target.user,
        "password": password,
        "ssl": tls_context(target, driver_kwargs.get("ssl")),
    }


async def create_pool(
    target: Target,
    auth: DbAuth,
    *,
    min_size: int,
    max_size: int,
    connect_rate: float | None,
    **driver_kwargs: Any,
) -> asyncpg.Pool:
    """An ``asyncpg.Pool`` whose every new connection authenticates with IAM credentials."""
    import asyncpg

    user_connect = driver_kwargs.pop("connect", None) or asyncpg.connect
    rate = connect_rate_for(target.endpoint, connect_rate)

    async def connect(*args: Any, **kwargs: Any) -> asyncpg.Connection:
        return await connect_with_retry(
            auth,
            lambda: _refusing_plain_text(target, user_connect(*args, **kwargs)),
            _rejection,
            user=target.user or "",
            endpoint=target.endpoint,
            rate=rate,
        )

    pool: asyncpg.Pool = await asyncpg.create_pool(
        min_size=min_size,
        max_size=max_size,
        connect=connect,
        **_settings(target, auth, driver_kwargs),
    )
    return pool


async def connect(
    target: Target, auth: DbAuth, *, connect_rate: float | None = None, **driver_kwargs: Any
) -> asyncpg.Connection:
    """One ``asyncpg.Connection`` authenticated with IAM credentials."""
    import asyncpg

    settings = _settings(target, auth, driver_kwargs)
    connection: asyncpg.Connection = await connect_with_retry(
        auth,
        lambda: _refusing_plain_text(target, asyncpg.connect(**settings)),
        _rejection,
        user=target.user or "",
        endpoint=target.endpoint,
        rate=connect_rate_for(target.endpoint, connect_rate),
    )
    return connection
