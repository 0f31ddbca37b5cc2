"""Typed entry points for asyncpg: ``await iampool.asyncpg.create_pool(dsn, aws_iam=cfg)``.

The same pools as :func:`iampool.create_pool` gives for ``postgresql://`` and
``postgresql+asyncpg://`` DSNs, typed as asyncpg's own classes. For Aurora PostgreSQL and RDS,
and for Aurora DSQL when the ``aws_iam`` block says ``"dsql": true``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._cache import CredentialCache
from ._config import ConfigLike
from .pools import DEFAULT_SIZES, PendingPool, connect_with, open_pool

if TYPE_CHECKING:
    import asyncpg

__all__ = ["connect", "create_pool"]

_MIN_SIZE, _MAX_SIZE = DEFAULT_SIZES["asyncpg"]


def create_pool(
    dsn: str,
    *,
    aws_iam: ConfigLike,
    min_size: int = _MIN_SIZE,
    max_size: int = _MAX_SIZE,
    cache: CredentialCache | None = None,
    connect_rate: float | None = None,
    **driver_kwargs: Any,
) -> PendingPool[asyncpg.Pool]:
    """The real ``asyncpg.Pool`` (default min 10 / max 10) whose every new connection awaits a
    fresh (cached) IAM token; keyword arguments go to ``asyncpg.create_pool``.

    ``await`` it for the pool, or ``async with`` it to have the pool closed on exit.

    Raises:
        ConfigError: invalid configuration, or a DSN that is not a ``postgresql://`` or
            ``postgresql+asyncpg://`` one.
        MissingExtraError: the driver is not installed.
    """
    return open_pool(
        dsn,
        aws_iam=aws_iam,
        cache=cache,
        driver="asyncpg",
        min_size=min_size,
        max_size=max_size,
        connect_rate=connect_rate,
        driver_kwargs=driver_kwargs,
    )


async def connect(
    dsn: str,
    *,
    aws_iam: ConfigLike,
    cache: CredentialCache | None = None,
    connect_rate: float | None = None,
    **driver_kwargs: Any,
) -> asyncpg.Connection:
    """One ``asyncpg.Connection`` authenticated with an IAM token; keyword arguments go to
    ``asyncpg.connect``."""
    connection: asyncpg.Connection = await connect_with(
        "asyncpg", dsn, aws_iam, cache, connect_rate, driver_kwargs
    )
    return connection
