"""Typed entry points for psycopg 3: ``await iampool.psycopg.create_pool(dsn, aws_iam=cfg)``.

The same pools as :func:`iampool.create_pool` gives for ``postgresql+psycopg://`` DSNs, typed
as psycopg's own classes: the real ``psycopg_pool.AsyncConnectionPool`` and
``psycopg.AsyncConnection``. For Aurora PostgreSQL and RDS, and for Aurora DSQL when the
``aws_iam`` block says ``"dsql": true``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._cache import CredentialCache
from ._config import ConfigLike
from .pools import DEFAULT_SIZES, PendingPool, connect_with, open_pool

if TYPE_CHECKING:
    from psycopg import AsyncConnection
    from psycopg.rows import TupleRow
    from psycopg_pool import AsyncConnectionPool

__all__ = ["connect", "create_pool"]

_MIN_SIZE, _MAX_SIZE = DEFAULT_SIZES["psycopg"]


def create_pool(
    dsn: str,
    *,
    aws_iam: ConfigLike,
    min_size: int = _MIN_SIZE,
    max_size: int = _MAX_SIZE,
    cache: CredentialCache | None = None,
    connect_rate: float | None = None,
    **driver_kwargs: Any,
) -> PendingPool[AsyncConnectionPool[AsyncConnection[TupleRow]]]:
    """The real ``psycopg_pool.AsyncConnectionPool`` (default min 4 / max 4), open and filled,
    whose every new connection gets a fresh (cached) IAM token from its ``kwargs`` callable.

    Keyword arguments go to the pool (``timeout``, ``max_lifetime``, ``configure``, ...);
    ``kwargs=`` (a dict) to every connection (``autocommit``, ``row_factory``, libpq settings).

    ``await`` it for the pool, or ``async with`` it to have the pool closed on exit.

    Raises:
        ConfigError: invalid configuration, or a DSN that is not a ``postgresql+psycopg://``
            one.
        MissingExtraError: the driver is not installed.
    """
    return open_pool(
        dsn,
        aws_iam=aws_iam,
        cache=cache,
        driver="psycopg",
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
) -> AsyncConnection[TupleRow]:
    """One ``psycopg.AsyncConnection`` authenticated with an IAM token; keyword arguments are
    connection settings (``autocommit``, ``row_factory``, libpq parameters)."""
    connection: AsyncConnection[TupleRow] = await connect_with(
        "psycopg", dsn, aws_iam, cache, connect_rate, driver_kwargs
    )
    return connection
