"""RDS / Aurora: IAM auth tokens signed locally with cached AWS credentials."""

from __future__ import annotations

import functools
from datetime import datetime, timezone

from .._aws import AwsCredentials
from .._config import AwsIamConfig
from .._credentials import DbCredentials
from .._errors import ConfigError, ConfigProblem
from .._leases import Lease
from .._minting import MintContext, sts_key
from .._sigv4 import RDS_TOKEN_LIFETIME

__all__ = ["RdsIamAuth"]


class RdsIamAuth:
    """``DbAuth`` for Aurora PostgreSQL / MySQL and RDS: a token per (endpoint, user).

    A token is reused while both it and the credentials that signed it stay valid (minus the
    cache's safety margin), and re-signed before that. Signing is local: with the AWS credentials
    cached, a missing or due token is signed at once on the caller's thread (a few microseconds);
    only a call to STS goes to the service loop.
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
        self._sts_key = sts_key(config)
        self._mint_aws = functools.partial(context.mint_aws_credentials, config)
        # Tokens follow the identity that signs them: the configuration's STS cache key. The
        # parts every endpoint of one configuration shares are one tuple (a small key per token).
        self._key = (host, port, _token_scope(self._user, config.region, self._sts_key))
        context.prepare(config)

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
        return await self._leases.get(self._key, self._mint, self._mint_now)

    def invalidate(self) -> None:
        """Drop the cached token (after the database refused it)."""
        self._leases.invalidate(self._key)

    def _mint_now(self, current: DbCredentials | None) -> Lease[DbCredentials] | None:
        aws = self._leases.peek(self._sts_key, self._mint_aws)
        return None if aws is None else self._sign(aws)

    async def _mint(self) -> Lease[DbCredentials]:
        return self._sign(await self._context.aws_credentials(self._config))

    def _sign(self, aws: AwsCredentials) -> Lease[DbCredentials]:
        context = self._context
        now = context.clock()
        token = context.signer.sign(
            aws, host=self._host, port=self._port, user=self._user, region=self._config.region
        )
        context.counters.tokens_signed += 1
        # Its X-Amz-Date is to the second: so is its expiry (900 s later), shared by every token
        # signed in that second.
        expires_at = min(float(int(now) + RDS_TOKEN_LIFETIME), aws.expires_at or float("inf"))
        usable_until = min(now + context.token_reuse, context.expire_before(expires_at, now))
        if aws.valid_until is not None:  # never past the signing credentials' own cutoff
            usable_until = min(usable_until, aws.valid_until)
        credentials = DbCredentials(
            self._user, token, self._host, self._port, None, _utc(expires_at)
        )
        return Lease(credentials, usable_until)


@functools.lru_cache(maxsize=256)
def _token_scope(
    user: str, region: str, sts: tuple[str, str | None, str, str | None]
) -> tuple[str, str, str, tuple[str, str | None, str, str | None]]:
    return ("rds-token", user, region, sts)


_last_utc: tuple[float, datetime] = (float("nan"), datetime.min)


def _utc(epoch: float) -> datetime:
    # Tokens signed in the same second expire in the same second: share one datetime.
    global _last_utc
    cached_epoch, moment = _last_utc
    if epoch != cached_epoch:
        moment = datetime.fromtimestamp(epoch, timezone.utc)
        _last_utc = (epoch, moment)
    return moment
