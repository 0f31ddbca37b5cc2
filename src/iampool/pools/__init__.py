"""``create_pool`` and ``connect``: the DSN's scheme picks the driver-native pool."""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from .._cache import CredentialCache, default_cache
from .._config import SUPERSET_NO_REDSHIFT_SELECTOR, ConfigLike, coerce_config
from .._credentials import DbAuth
from .._errors import ConfigError, ConfigProblem
from ..auth import auth_for
from ._dsn import Engine, Target, parse_target

__all__ = ["connect", "create_pool", "driver", "resolve"]

_DRIVER_MODULES: dict[Engine, str] = {
    "postgresql": "postgres",
    "mysql": "mysql",
    "redshift": "redshift",
}
# Defaults of each driver's own pool: asyncpg 10/10, aiomysql 1/10.
_DEFAULT_SIZES: dict[Engine, tuple[int, int]] = {
    "postgresql": (10, 10),
    "mysql": (1, 10),
    "redshift": (1, 10),
}


def resolve(dsn: str, aws_iam: ConfigLike, cache: CredentialCache | None) -> tuple[Target, DbAuth]:
    """Validate a DSN against its IAM configuration and build the authenticator."""
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
    if target.engine == "redshift" and config.backend == "rds":
        raise ConfigError(_NO_SELECTOR)
    if target.engine != "redshift" and config.backend != "rds":
        raise ConfigError(
            ConfigProblem("dsn", f"aws_iam describes {config.backend}; use a redshift:// DSN"),
            context="DSN",
        )
    auth = auth_for(
        config,
        host=target.host,
        port=target.port,
        cache=cache if cache is not None else default_cache(),
    )
    return target, auth


_NO_SELECTOR = ConfigProblem("aws_iam", SUPERSET_NO_REDSHIFT_SELECTOR)


def _is_redshift(dsn: str) -> bool:
    scheme, separator, _ = dsn.partition("://")
    return bool(separator) and scheme.lower() in ("redshift", "redshift+redshift_connector")


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


def driver(engine: Engine) -> ModuleType:
    """The pool module for an engine, imported on demand (its driver is an optional extra)."""
    return importlib.import_module(f"{__name__}.{_DRIVER_MODULES[engine]}")


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

    ``postgresql://`` gives the real ``asyncpg.Pool`` (defaults min 10 / max 10, as asyncpg);
    ``mysql://`` a :class:`~iampool.MySQLPool` with aiomysql's interface (1 / 10);
    ``redshift://`` a :class:`~iampool.RedshiftPool` (1 / 10), whose host may be left out to
    discover the endpoint. ``aws_iam`` is an ``AwsIamConfig``, the block as a dict, or
    ``encrypted_extra`` JSON; ``connect_rate`` caps new connections per second to the endpoint
    (RDS advises staying under ~200/s); other keyword arguments go to the driver.

    Raises:
        ConfigError: invalid configuration or DSN (every problem listed).
    """
    target, auth = resolve(dsn, aws_iam, cache)
    default_min, default_max = _DEFAULT_SIZES[target.engine]
    return await driver(target.engine).create_pool(
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
    """One connection (asyncpg, aiomysql or a RedshiftConnection) authenticated with AWS IAM."""
    target, auth = resolve(dsn, aws_iam, cache)
    return await driver(target.engine).connect(
        target, auth, connect_rate=connect_rate, **driver_kwargs
    )
