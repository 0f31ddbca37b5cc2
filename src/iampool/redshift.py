"""Typed entry points for Redshift: ``await iampool.redshift.create_pool(dsn, aws_iam=cfg)``.

The same pools as :func:`iampool.create_pool` gives for ``redshift://`` DSNs, typed: a
:class:`~iampool.RedshiftPool` and :class:`~iampool.RedshiftConnection` (redshift-connector
driven from worker threads).
"""

from __future__ import annotations

from typing import Any

from ._cache import CredentialCache
from ._config import ConfigLike
from .pools import DEFAULT_SIZES, PendingPool, connect_with, open_pool
from .pools.redshift_connector import RedshiftConnection, RedshiftPool

__all__ = ["connect", "create_pool"]

_MIN_SIZE, _MAX_SIZE = DEFAULT_SIZES["redshift_connector"]


def create_pool(
    dsn: str,
    *,
    aws_iam: ConfigLike,
    min_size: int = _MIN_SIZE,
    max_size: int = _MAX_SIZE,
    cache: CredentialCache | None = None,
    connect_rate: float | None = None,
    **driver_kwargs: Any,
) -> PendingPool[RedshiftPool]:
    """A :class:`~iampool.RedshiftPool` (default min 1 / max 10) whose connections log in with
    temporary Redshift credentials; keyword arguments go to ``redshift_connector.connect``.

    ``await`` it for the pool, or ``async with`` it to have the pool closed on exit.

    Raises:
        ConfigError: invalid configuration, or a DSN that is not a ``redshift://`` one.
        MissingExtraError: the driver is not installed.
    """
    return open_pool(
        dsn,
        aws_iam=aws_iam,
        cache=cache,
        driver="redshift_connector",
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
) -> RedshiftConnection:
    """One :class:`~iampool.RedshiftConnection` logged in with temporary credentials."""
    connection: RedshiftConnection = await connect_with(
        "redshift_connector", dsn, aws_iam, cache, connect_rate, driver_kwargs
    )
    return connection
