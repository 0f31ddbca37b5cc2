"""RDS / Aurora: IAM auth tokens signed locally with cached AWS credentials."""

from __future__ import annotations

from datetime import datetime, timezone

from .._aws import RDS_TOKEN_LIFETIME
from .._config import AwsIamConfig
from .._credentials import DbCredentials
from .._errors import ConfigError, ConfigProblem
from .._leases import Lease
from .._minting import MintContext, sts_key

__all__ = ["RdsIamAuth"]


class RdsIamAuth:
    """``DbAuth`` for Aurora PostgreSQL / MySQL and RDS: a token per (endpoint, user).

    A token is reused while both it and the credentials that signed it stay valid (minus the
    cache's safety margin), and re-signed in the background before that.
    """

    def __init__(self, config: AwsIamConfig, *, host: str, port: int, context: MintContext) -> None:
        problems = []
        if config.backend != "rds":
            problems.append(
                ConfigProblem("backend", f"RdsIamAuth serves rds, not {config.backend}")
            )
        if not config.db_username:
            problems.append(ConfigProblem("db_username", "is required for RDS IAM authentication"))
        if not host:
            problems.append(ConfigProblem("host", "the database endpoint host is required"))
        if problems:
            raise ConfigError(problems)
        assert config.db_username is not None
        self._config = config
        self._user = config.db_username
        self._host = host
        self._port = port
        self._context = context
        self._leases = context.leases
        # Tokens follow the identity that signs them: the configuration's STS cache key.
        self._key = ("rds-token", host, port, self._user, config.region, sts_key(config))

    @property
    def config(self) -> AwsIamConfig:
        """The configuration this authenticator serves."""
        return self._config

    @property
    def endpoint(self) -> tuple[str, int]:
        """The host and port tokens are signed for."""
        return self._host, self._port

    def __repr__(self) -> str:
        return (
            f"RdsIamAuth(user={self._user!r}, endpoint='{self._host}:{self._port}', "
            f"region={self._config.region!r})"
        )

    async def credentials(self) -> DbCredentials:
        """The current token as ``DbCredentials``; a cached one when warm."""
        return await self._leases.get(self._key, self._mint)

    def invalidate(self) -> None:
        """Drop the cached token (after the database refused it)."""
        self._leases.invalidate(self._key)

    async def _mint(self) -> Lease[DbCredentials]:
        context = self._context
        aws = await context.aws_credentials(self._config)
        token = context.source.sign_rds_token(
            aws, host=self._host, port=self._port, user=self._user, region=self._config.region
        )
        context.counters.tokens_signed += 1
        now = context.clock()
        expires_at = now + RDS_TOKEN_LIFETIME
        if aws.expires_at is not None:
            expires_at = min(expires_at, aws.expires_at)
        usable_until = min(now + context.token_reuse, context.expire_before(expires_at, now))
        if aws.valid_until is not None:  # never past the signing credentials' own cutoff
            usable_until = min(usable_until, aws.valid_until)
        credentials = DbCredentials(
            user=self._user,
            password=token,
            host=self._host,
            port=self._port,
            database=None,
            expires_at=datetime.fromtimestamp(expires_at, timezone.utc),
        )
        return Lease(credentials, usable_until)
