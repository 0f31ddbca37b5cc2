"""Redshift: temporary database passwords from the Redshift APIs, cached and single-flight.

One class serves both deployments; what differs (which API mints the login, which API tells
the endpoint) is a :class:`RedshiftApi` pair: provisioned clusters here, Serverless workgroups in
``serverless.py``. The backend comes from the configuration, never from parsing a host name.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from .._aws import (
    AwsApi,
    AwsCredentials,
    RedshiftLogin,
    describe_cluster_endpoint,
    get_cluster_credentials,
)
from .._cache import CredentialCache, Lease, sts_key
from .._config import AwsIamConfig
from .._credentials import DbCredentials
from .._errors import ConfigError, ConfigProblem

__all__ = ["PROVISIONED", "RedshiftApi", "RedshiftAuth"]

DEFAULT_PORT = 5439


@dataclass(frozen=True)
class RedshiftApi:
    """The two calls that differ between provisioned Redshift and Redshift Serverless."""

    name: str  # what the selector names, for keys and messages: "cluster" | "workgroup"
    selector: Callable[[AwsIamConfig], str | None]
    login: Callable[[AwsApi, AwsCredentials, AwsIamConfig], Awaitable[RedshiftLogin]]
    endpoint: Callable[[AwsApi, AwsCredentials, AwsIamConfig], Awaitable[tuple[str, int]]]


async def _cluster_login(api: AwsApi, aws: AwsCredentials, config: AwsIamConfig) -> RedshiftLogin:
    assert config.cluster_identifier is not None
    assert config.db_username is not None
    return await get_cluster_credentials(
        api,
        aws,
        region=config.region,
        cluster_identifier=config.cluster_identifier,
        db_user=config.db_username,
        db_name=config.db_name,
        duration=config.password_duration,
        auto_create=config.auto_create,
        db_groups=config.db_groups,
    )


async def _cluster_endpoint(
    api: AwsApi, aws: AwsCredentials, config: AwsIamConfig
) -> tuple[str, int]:
    assert config.cluster_identifier is not None
    return await describe_cluster_endpoint(
        api, aws, region=config.region, cluster_identifier=config.cluster_identifier
    )


PROVISIONED = RedshiftApi(
    name="cluster",
    selector=lambda config: config.cluster_identifier,
    login=_cluster_login,
    endpoint=_cluster_endpoint,
)


class RedshiftAuth:
    """``DbAuth`` for Redshift: a temporary password per (cluster or workgroup, user, database).

    Reused until its ``Expiration`` minus the cache's margin and refreshed ahead in the
    background. Without ``host`` the endpoint comes from DescribeClusters / GetWorkgroup
    (cached like credentials).
    """

    def __init__(
        self,
        config: AwsIamConfig,
        api: RedshiftApi,
        *,
        cache: CredentialCache,
        host: str | None = None,
        port: int | None = None,
    ) -> None:
        selector = api.selector(config)
        if selector is None:
            raise ConfigError(
                ConfigProblem("backend", f"RedshiftAuth needs a {api.name} in the configuration")
            )
        self._config = config
        self._api = api
        self._cache = cache
        self._host = host
        self._port = port
        scope = (api.name, selector, config.region, sts_key(config))
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
        self._label = f"{api.name} {selector}"

    @property
    def config(self) -> AwsIamConfig:
        """The configuration this authenticator serves."""
        return self._config

    def __repr__(self) -> str:
        return f"RedshiftAuth({self._label!r}, region={self._config.region!r})"

    async def credentials(self) -> DbCredentials:
        """The current temporary login; a cached one when warm."""
        return await self._cache.get(self._key, self._mint)

    def invalidate(self) -> None:
        """Drop the cached password (after the database refused it)."""
        self._cache.invalidate(self._key)

    async def _mint(self) -> Lease[DbCredentials]:
        cache = self._cache
        aws = await cache.aws_credentials(self._config)
        # The credentials call first: a wrong cluster or workgroup then fails with the message
        # users know from Superset ("Failed to get Redshift ... credentials"), host or not.
        login = await self._api.login(cache.api, aws, self._config)
        cache.count("api_calls")
        if self._host is None:
            host, port = await cache.get(self._endpoint_key, lambda: self._discover(aws))
        else:
            host, port = self._host, self._port or self._config.port or DEFAULT_PORT
        now = cache.clock()
        credentials = DbCredentials(
            user=login.user,
            password=login.password,
            host=host,
            port=port,
            database=self._config.db_name,
            expires_at=datetime.fromtimestamp(login.expires_at, timezone.utc),
        )
        return Lease(credentials, cache.expire_before(login.expires_at, now))

    async def _discover(self, aws: AwsCredentials) -> Lease[tuple[str, int]]:
        endpoint = await self._api.endpoint(self._cache.api, aws, self._config)
        self._cache.count("api_calls")
        return Lease(endpoint, self._cache.clock() + self._cache.ttl)
