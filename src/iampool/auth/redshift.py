"""Redshift: temporary database passwords from the Redshift APIs, cached and single-flight.

One class serves both deployments: provisioned clusters (GetClusterCredentials, DescribeClusters)
and Serverless workgroups (GetCredentials, GetWorkgroup). Which one comes from the configuration
(``workgroup_name`` or ``cluster_identifier``), never from parsing a host name.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import NoReturn

from .._aws import AwsCredentials, RedshiftLogin
from .._config import AwsIamConfig
from .._credentials import DbCredentials, refuse_pickling
from .._endpoints import with_region
from .._errors import ConfigError, ConfigProblem
from .._leases import Lease
from .._minting import MintContext, sts_key

__all__ = ["RedshiftAuth"]

DEFAULT_PORT = 5439


class RedshiftAuth:
    """``DbAuth`` for Redshift: a temporary password per (cluster or workgroup, user, database).

    Reused until its ``Expiration`` minus the cache's margin and refreshed ahead in the
    background. Without ``host`` the endpoint comes from DescribeClusters / GetWorkgroup
    (cached like credentials).
    """

    __slots__ = (
        "_config", "_context", "_endpoint_key", "_host", "_key", "_label", "_leases", "_port"
    )  # fmt: skip

    def __init__(
        self,
        config: AwsIamConfig,
        *,
        context: MintContext,
        host: str | None = None,
        port: int | None = None,
    ) -> None:
        if config.workgroup_name is not None:
            kind, selector = "workgroup", config.workgroup_name
        elif config.cluster_identifier is not None:
            kind, selector = "cluster", config.cluster_identifier
        else:
            raise ConfigError(
                ConfigProblem("backend", "RedshiftAuth needs a cluster_identifier or a "
                                         "workgroup_name in the configuration")
            )  # fmt: skip
        # Without a host, the region also says where DescribeClusters / GetWorkgroup look.
        config = with_region(config, host)
        self._config = config
        self._context = context
        self._leases = context.leases
        self._host = host
        self._port = port
        scope = (kind, selector, config.region, sts_key(config))
        self._endpoint_key = ("redshift-endpoint", *scope)
        self._key = (
            "redshift-password",
            *scope,
            config.db_username,
            config.db_name,
            config.db_groups,
            config.auto_create,
            config.password_duration,
            host,
            port,
        )
        self._label = f"{kind} {selector}"
        context.prepare(config)

    @property
    def config(self) -> AwsIamConfig:
        """The configuration this authenticator serves."""
        return self._config

    def __reduce__(self) -> NoReturn:
        refuse_pickling(self)

    def __repr__(self) -> str:
        return f"RedshiftAuth({self._label!r}, region={self._config.region!r})"

    async def credentials(self) -> DbCredentials:
        """The current temporary login; a cached one when warm."""
        return await self._leases.get(self._key, self._mint)

    def credentials_sync(self, timeout: float | None = None) -> DbCredentials:
        """``credentials()`` for synchronous code: blocks on a miss (see ``DbAuth``); the
        endpoint discovery, when there is one, runs inside the same shared mint."""
        return self._leases.get_blocking(self._key, self._mint, timeout=timeout)

    def prefetch(self) -> None:
        """Start minting a password (and its credentials) in the background, if none is cached."""
        self._leases.prefetch(self._key, self._mint)

    def invalidate(self) -> None:
        """Drop the cached password (after the database refused it)."""
        self._leases.invalidate(self._key)

    async def _mint(self) -> Lease[DbCredentials]:
        context = self._context
        aws = await context.aws_credentials(self._config)
        # The credentials call first: a wrong cluster or workgroup then fails with the message
        # users know from Superset ("Failed to get Redshift ... credentials"), host or not.
        login = await self._login(aws)
        context.counters.api_calls += 1
        if self._host is None:
            host, port = await self._leases.get(self._endpoint_key, lambda: self._discover(aws))
        else:
            host, port = self._host, self._port or self._config.port or DEFAULT_PORT
        credentials = DbCredentials(
            user=login.user,
            password=login.password,
            host=host,
            port=port,
            database=self._config.db_name,
            expires_at=datetime.fromtimestamp(login.expires_at, timezone.utc),
        )
        return Lease(credentials, context.expire_before(login.expires_at, context.clock()))

    async def _login(self, aws: AwsCredentials) -> RedshiftLogin:
        config, source = self._config, self._context.source
        if config.workgroup_name is not None:
            return await source.serverless_credentials(
                aws,
                region=config.region,
                workgroup_name=config.workgroup_name,
                db_name=config.db_name,
                duration=config.password_duration,
            )
        assert config.cluster_identifier is not None
        assert config.db_username is not None  # required for provisioned by the config rules
        return await source.cluster_credentials(
            aws,
            region=config.region,
            cluster_identifier=config.cluster_identifier,
            db_user=config.db_username,
            db_name=config.db_name,
            duration=config.password_duration,
            auto_create=config.auto_create,
            db_groups=config.db_groups,
        )

    async def _discover(self, aws: AwsCredentials) -> Lease[tuple[str, int]]:
        config, source = self._config, self._context.source
        if config.workgroup_name is not None:
            endpoint = await source.workgroup_endpoint(
                aws, region=config.region, workgroup_name=config.workgroup_name
            )
        else:
            assert config.cluster_identifier is not None
            endpoint = await source.cluster_endpoint(
                aws, region=config.region, cluster_identifier=config.cluster_identifier
            )
        self._context.counters.api_calls += 1
        return Lease(endpoint, self._context.clock() + self._context.ttl)
