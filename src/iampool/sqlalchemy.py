"""SQLAlchemy 2 glue: an ``async_creator`` that opens each DBAPI connection with IAM credentials.

::

    engine = create_async_engine(
        "postgresql+asyncpg://",
        async_creator=iampool.sqlalchemy.async_creator(dsn, aws_iam=cfg),
    )

SQLAlchemy keeps its own pool; every new connection it opens awaits fresh (cached) credentials.
Works with the ``postgresql+asyncpg``, ``postgresql+psycopg``, ``mysql+aiomysql`` and
``mysql+asyncmy`` dialects: give iampool a DSN with the same scheme as the engine's URL.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ._cache import CredentialCache
from ._config import ConfigLike
from .pools import driver_module, resolve

__all__ = ["async_creator"]


def async_creator(
    dsn: str,
    *,
    aws_iam: ConfigLike,
    cache: CredentialCache | None = None,
    connect_rate: float | None = None,
    **driver_kwargs: Any,
) -> Callable[[], Awaitable[Any]]:
    """A zero-argument coroutine function returning a new DBAPI connection of the DSN's driver
    (asyncpg, psycopg, aiomysql or asyncmy).

    The DSN and configuration are validated now, so mistakes surface at engine creation.

    Raises:
        ConfigError: invalid configuration or DSN, or a ``redshift://`` DSN (SQLAlchemy's
            Redshift dialects are synchronous; use ``iampool.create_pool``).
    """
    target, auth = resolve(dsn, aws_iam, cache, driver_kwargs=driver_kwargs)
    if target.engine == "redshift":
        from ._errors import ConfigError, ConfigProblem

        supported = "postgresql:// and mysql:// DSNs (+asyncpg, +psycopg, +aiomysql, +asyncmy)"
        raise ConfigError(
            ConfigProblem("dsn", f"async_creator supports {supported}"), context="DSN"
        )
    module = driver_module(target.driver)

    async def creator() -> Any:
        return await module.connect(target, auth, connect_rate=connect_rate, **driver_kwargs)

    return creator
