"""Typed entry points for aiomysql: ``await iampool.aiomysql.create_pool(dsn, aws_iam=cfg)``.

The same pools as :func:`iampool.create_pool` gives for ``mysql://`` and ``mysql+aiomysql://``
DSNs (Aurora MySQL, RDS for MySQL/MariaDB), typed: a :class:`~iampool.MySQLPool` with
aiomysql's interface, and aiomysql connections.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._cache import CredentialCache
from ._config import ConfigLike
from .pools import DEFAULT_SIZES, PendingPool, connect_with, open_pool
from .pools.aiomysql import MySQLPool

if TYPE_CHECKING:
    from aiomysql import Connection

__all__ = ["connect", "create_pool"]

_MIN_SIZE, _MAX_SIZE = DEFAULT_SIZES["aiomysql"]


def create_pool(
    dsn: str,
    *,
    aws_iam: ConfigLike,
    min_size: int = _MIN_SIZE,
    max_size: int = _MAX_SIZE,
    cache: CredentialCache | None = None,
    connect_rate: float | None = None,
    pool_recycle: float = -1,
    **driver_kwargs: Any,
) -> PendingPool[MySQLPool]:
    """A :class:`~iampool.MySQLPool` (default min 1 / max 10), each connection opened with a
    fresh (cached) IAM token over TLS; keyword arguments go to each ``aiomysql`` connection.

    ``await`` it for the pool, or ``async with`` it to have the pool closed on exit.

    Raises:
        ConfigError: invalid configuration, or a DSN that is not a ``mysql://`` or
            ``mysql+aiomysql://`` one.
        MissingExtraError: the driver is not installed.
    """
    driver_kwargs["pool_recycle"] = pool_recycle
    return open_pool(
        dsn,
        aws_iam=aws_iam,
        cache=cache,
        driver="aiomysql",
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
) -> Connection:
    """One aiomysql connection authenticated with an IAM token over TLS."""
    connection: Connection = await connect_with(
        "aiomysql", dsn, aws_iam, cache, connect_rate, driver_kwargs
    )
    return connection
