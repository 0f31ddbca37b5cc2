"""Typed entry points for asyncmy: ``await iampool.asyncmy.create_pool(dsn, aws_iam=cfg)``.

The same pools as :func:`iampool.create_pool` gives for ``mysql+asyncmy://`` DSNs (Aurora
MySQL, RDS for MySQL/MariaDB), typed as asyncmy's own classes: ``asyncmy.Pool``, whose
connections get a fresh (cached) IAM token from a ``password_creator``, and
``asyncmy.Connection``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._cache import CredentialCache
from ._config import ConfigLike
from .pools import DEFAULT_SIZES, PendingPool, connect_with, open_pool

if TYPE_CHECKING:
    from asyncmy import Connection, Pool

__all__ = ["connect", "create_pool"]

_MIN_SIZE, _MAX_SIZE = DEFAULT_SIZES["asyncmy"]


def create_pool(
    dsn: str,
    *,
    aws_iam: ConfigLike,
    min_size: int = _MIN_SIZE,
    max_size: int = _MAX_SIZE,
    cache: CredentialCache | None = None,
    connect_rate: float | None = None,
    **driver_kwargs: Any,
) -> PendingPool[Pool]:
    """asyncmy's own ``Pool`` (default min 1 / max 10), filled to ``min_size``; keyword
    arguments go to the pool (``pool_recycle``, ``echo``) and to each connection.

    ``await`` it for the pool, or ``async with`` it to have the pool closed on exit.

    Raises:
        ConfigError: invalid configuration, or a DSN that is not a ``mysql+asyncmy://`` one.
        MissingExtraError: the driver is not installed.
    """
    return open_pool(
        dsn,
        aws_iam=aws_iam,
        cache=cache,
        driver="asyncmy",
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
    """One ``asyncmy.Connection`` authenticated with an IAM token over TLS."""
    connection: Connection = await connect_with(
        "asyncmy", dsn, aws_iam, cache, connect_rate, driver_kwargs
    )
    return connection
