"""``create_pool`` and ``connect`` for any DSN: its scheme picks the driver module.

Each driver has a module here that takes a validated :class:`~iampool.pools._dsn.Target` and a
``DbAuth``: ``postgres`` (asyncpg), ``psycopg``, ``mysql`` (aiomysql), ``asyncmy`` and
``redshift`` (redshift-connector). They all satisfy one protocol, :class:`DriverModule`, and are
imported on demand (each driver is an optional extra). The typed entry points users import
(``iampool.asyncpg``, ``iampool.psycopg``, ...) call the same modules through :func:`resolve`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol, TypeVar

from .._cache import CredentialCache, default_cache
from .._config import SUPERSET_NO_REDSHIFT_SELECTOR, ConfigLike, coerce_config
from .._credentials import DbAuth
from .._errors import ConfigError, ConfigProblem
from ..auth import auth_for, prefetch
from ._dsn import SCHEMES, Driver, Target, parse_target

__all__ = ["DEFAULT_SIZES", "DriverModule", "connect", "create_pool", "driver_module", "resolve"]

PoolT = TypeVar("PoolT", covariant=True)
ConnectionT = TypeVar("ConnectionT", covariant=True)

# Each driver's own pool defaults (min, max): asyncpg 10/10, psycopg_pool 4/4, aiomysql and
# asyncmy 1/10; RedshiftPool follows aiomysql.
DEFAULT_SIZES: dict[Driver, tuple[int, int]] = {
    "asyncpg": (10, 10),
    "psycopg": (4, 4),
    "aiomysql": (1, 10),
    "asyncmy": (1, 10),
    "redshift_connector": (1, 10),
}


class DriverModule(Protocol[PoolT, ConnectionT]):
    """What a driver module offers: a pool and a connection for a validated target."""

    def check_settings(self, target: Target, driver_kwargs: Mapping[str, Any]) -> None:
        """Raise ``ConfigError`` for DSN options or keyword arguments the driver module would
        refuse (before any AWS call: :func:`resolve` calls it)."""
        ...

    async def create_pool(
        self,
        target: Target,
        auth: DbAuth,
        *,
        min_size: int,
        max_size: int,
        connect_rate: float | None,
        **driver_kwargs: Any,
    ) -> PoolT:
        """A pool of the driver's connections, each authenticated with ``auth``."""
        ...

    async def connect(
        self, target: Target, auth: DbAuth, *, connect_rate: float | None, **driver_kwargs: Any
    ) -> ConnectionT:
        """One connection of the driver, authenticated with ``auth``."""
        ...


def driver_module(driver: Driver) -> DriverModule[Any, Any]:
    """The module for a driver, imported on first use."""
    if driver == "asyncpg":
        from . import postgres

        return postgres
    if driver == "psycopg":
        from . import psycopg

        return psycopg
    if driver == "aiomysql":
        from . import mysql

        return mysql
    if driver == "asyncmy":
        from . import asyncmy

        return asyncmy
    from . import redshift

    return redshift


def resolve(
    dsn: str,
    aws_iam: ConfigLike,
    cache: CredentialCache | None,
    *,
    driver: Driver | None = None,
    driver_kwargs: Mapping[str, Any] | None = None,
) -> tuple[Target, DbAuth]:
    """Validate a DSN against its IAM configuration and build the authenticator.

    ``driver``: the driver a typed entry point serves; a DSN naming another one is refused.
    ``driver_kwargs``: the keyword arguments for the driver, checked with the DSN's options,
    before the authenticator starts minting (an AWS call).

    Raises:
        ConfigError: invalid configuration or DSN, or a DSN for another driver.
    """
    try:
        config = coerce_config(aws_iam)
    except ConfigError as exc:
        if not _is_redshift(dsn) or _has_redshift_selector(aws_iam):
            raise
        # Without a selector the block reads as an RDS one, which asks for db_username; for a
        # redshift:// DSN the missing piece is the selector, as Superset says.
        others = [
            problem
            for problem in exc.errors
            if not (problem.field == "db_username" and problem.message.startswith("is required"))
        ]
        raise ConfigError([_NO_SELECTOR, *others]) from None
    if not config.enabled:
        raise ConfigError(
            ConfigProblem("enabled", "is false: this aws_iam block does not ask for IAM auth")
        )
    target = parse_target(dsn, config)
    if driver is not None and target.driver != driver:
        schemes = ", ".join(f"{name}://" for name, (_, known) in SCHEMES.items() if known == driver)
        message = (
            f"is a {target.driver} DSN, but this entry point serves {driver} ({schemes}); "
            f"use iampool.create_pool or the {target.driver} entry point"
        )
        raise ConfigError(ConfigProblem("dsn", message), context="DSN")
    if target.engine == "redshift" and config.backend == "rds":
        raise ConfigError(_NO_SELECTOR)
    if config.backend == "dsql" and target.engine != "postgresql":
        raise ConfigError(
            ConfigProblem("dsn", "aws_iam describes Aurora DSQL, which speaks PostgreSQL: use a "
                                 "postgresql:// or postgresql+psycopg:// DSN"),
            context="DSN",
        )  # fmt: skip
    if target.engine != "redshift" and config.backend not in ("rds", "dsql"):
        raise ConfigError(
            ConfigProblem("dsn", f"aws_iam describes {config.backend}; use a redshift:// DSN"),
            context="DSN",
        )
    driver_module(target.driver).check_settings(target, driver_kwargs or {})
    auth = auth_for(
        config,
        host=target.signed_host,  # the endpoint's name when the DSN's host is a tunnel
        port=target.signed_port,
        cache=cache if cache is not None else default_cache(),
    )
    prefetch(auth)  # a pool or a connection is on its way: its credentials can start now
    return target, auth


_NO_SELECTOR = ConfigProblem("aws_iam", SUPERSET_NO_REDSHIFT_SELECTOR)


def _is_redshift(dsn: str) -> bool:
    scheme, separator, _ = dsn.partition("://")
    known = SCHEMES.get(scheme.lower()) if separator else None
    return known is not None and known[0] == "redshift"


def _has_redshift_selector(aws_iam: ConfigLike) -> bool:
    """Whether the raw block names a cluster or a workgroup (it may be invalid otherwise)."""
    block: Any = aws_iam
    if isinstance(block, (str, bytes, bytearray)):
        try:
            block = json.loads(block)
        except (ValueError, RecursionError):
            return True  # not JSON: nothing to say about selectors, report the JSON error
    if isinstance(block, Mapping) and "aws_iam" in block:  # as AwsIamConfig.from_extra reads it
        block = block["aws_iam"]
    if not isinstance(block, Mapping):
        return True
    return block.get("workgroup_name") is not None or block.get("cluster_identifier") is not None


async def create_pool(
    dsn: str,
    *,
    aws_iam: ConfigLike,
    min_size: int | None = None,
    max_size: int | None = None,
    cache: CredentialCache | None = None,
    connect_rate: float | None = None,
    **driver_kwargs: Any,
) -> Any:
    """A driver-native pool whose every new connection authenticates with AWS IAM.

    The DSN's scheme picks the driver (SQLAlchemy's spelling): ``postgresql://`` and
    ``postgresql+asyncpg://`` give the real ``asyncpg.Pool`` (default min 10 / max 10);
    ``postgresql+psycopg://`` the real ``psycopg_pool.AsyncConnectionPool`` (4 / 4);
    ``mysql://`` and ``mysql+aiomysql://`` a :class:`~iampool.MySQLPool` with aiomysql's
    interface (1 / 10); ``mysql+asyncmy://`` asyncmy's own pool (1 / 10); ``redshift://`` a
    :class:`~iampool.RedshiftPool` (1 / 10), whose host may be left out to discover the endpoint.
    ``aws_iam`` is an ``AwsIamConfig``, the block as a dict, or ``encrypted_extra`` JSON;
    ``connect_rate`` caps new connections per second to the endpoint (RDS advises staying under
    ~200/s); other keyword arguments go to the driver. The result is typed ``Any``: the typed
    entry points (``iampool.asyncpg.create_pool`` and the like) give the driver's own type.

    Raises:
        ConfigError: invalid configuration or DSN (every problem listed).
    """
    target, auth = resolve(dsn, aws_iam, cache, driver_kwargs=driver_kwargs)
    default_min, default_max = DEFAULT_SIZES[target.driver]
    return await driver_module(target.driver).create_pool(
        target,
        auth,
        min_size=default_min if min_size is None else min_size,
        max_size=default_max if max_size is None else max_size,
        connect_rate=connect_rate,
        **driver_kwargs,
    )


async def connect(
    dsn: str,
    *,
    aws_iam: ConfigLike,
    cache: CredentialCache | None = None,
    connect_rate: float | None = None,
    **driver_kwargs: Any,
) -> Any:
    """One driver-native connection authenticated with AWS IAM (the DSN's scheme picks the
    driver, as for :func:`create_pool`)."""
    target, auth = resolve(dsn, aws_iam, cache, driver_kwargs=driver_kwargs)
    return await driver_module(target.driver).connect(
        target, auth, connect_rate=connect_rate, **driver_kwargs
    )
