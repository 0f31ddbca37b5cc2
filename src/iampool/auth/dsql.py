"""Aurora DSQL: IAM auth tokens signed locally with cached AWS credentials.

DSQL accepts IAM tokens only. The ``admin`` role logs in with a ``DbConnectAdmin`` token, every
other role with a ``DbConnect`` one; a token names the cluster's host (no port, no user) and
lives as long as its signer chose (``token_duration``). The region comes from the block, or
from the endpoint's host name, ``<cluster id>.dsql.<region>.on.aws``.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime, timezone

from .._config import AwsIamConfig
from .._credentials import DbCredentials
from .._errors import ConfigError, ConfigProblem
from .._leases import Lease
from .._minting import MintContext, sts_key

__all__ = ["ADMIN_ROLE", "DsqlAuth", "region_of_endpoint"]

ADMIN_ROLE = "admin"
_ENDPOINT = re.compile(r"[a-z0-9]+\.dsql(?:-[a-z0-9]+)?\.([a-z]{2}(?:-[a-z]+)+-\d{1,2})\.on\.aws")


def region_of_endpoint(host: str) -> str | None:
    """The region an Aurora DSQL endpoint names (``abc.dsql.us-east-1.on.aws``), else None."""
    found = _ENDPOINT.fullmatch(host.lower().rstrip("."))
    return found.group(1) if found else None


class DsqlAuth:
    """``DbAuth`` for Aurora DSQL: a token per (cluster host, role, region, lifetime, identity).

    A token is reused while both it and the credentials that signed it stay valid (minus the
    cache's safety margin), never longer than ``token_reuse``, and re-signed in the background
    before that.
    """

    def __init__(self, config: AwsIamConfig, *, host: str, port: int, context: MintContext) -> None:
        problems = []
        if config.backend != "dsql":
            problems.append(ConfigProblem("backend", f"DsqlAuth serves dsql, not {config.backend}"))
        if not config.db_username:
            problems.append(
                ConfigProblem("db_username", "is required: the DSQL role to log in as (admin, or "
                                             "a role granted to the IAM identity)")
            )  # fmt: skip
        if not host:
            problems.append(ConfigProblem("host", "the cluster endpoint host is required"))
        region = config.region or (region_of_endpoint(host) if host else None)
        if host and not region:
            problems.append(
                ConfigProblem("region", f"is required: the host {host!r} does not name one (a "
                                        "DSQL endpoint reads <id>.dsql.<region>.on.aws)")
            )  # fmt: skip
        if problems:
            raise ConfigError(problems)
        user = config.db_username
        assert user is not None
        assert region is not None
        if region != config.region:
            config = dataclasses.replace(config, region=region)
        self._config = config
        self._user = user
        self._admin = self._user == ADMIN_ROLE
        self._host = host
        self._port = port
        self._context = context
        self._leases = context.leases
        # Tokens follow the identity that signs them: the configuration's STS cache key.
        self._key = (
            "dsql-token",
            host,
            port,
            self._user,
            self._admin,
            region,
            config.token_duration,
            sts_key(config),
        )

    @property
    def config(self) -> AwsIamConfig:
        """The configuration this authenticator serves, with the region resolved."""
        return self._config

    @property
    def endpoint(self) -> tuple[str, int]:
        """The host tokens are signed for, and the port connections go to."""
        return self._host, self._port

    def __repr__(self) -> str:
        return (
            f"DsqlAuth(user={self._user!r}, endpoint='{self._host}:{self._port}', "
            f"region={self._config.region!r})"
        )

    async def credentials(self) -> DbCredentials:
        """The current token as ``DbCredentials``; a cached one when warm."""
        return await self._leases.get(self._key, self._mint)

    def invalidate(self) -> None:
        """Drop the cached token (after the database refused it)."""
        self._leases.invalidate(self._key)

    async def _mint(self) -> Lease[DbCredentials]:
        context, config = self._context, self._config
        aws = await context.aws_credentials(config)
        token = context.source.sign_dsql_token(
            aws,
            host=self._host,
            region=config.region,
            admin=self._admin,
            expires=config.token_duration,
        )
        context.counters.tokens_signed += 1
        now = context.clock()
        expires_at = now + config.token_duration
        if aws.expires_at is not None:  # signed by credentials that expire sooner: dead then
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
