"""``MintContext``: what a backend needs to mint database credentials, and the STS rules.

A backend (``auth/``) gets one from its cache: the leases to cache its values in, the AWS source
of the service loop it mints on, the clock, the margins and the counters. It reads nothing else
of the cache. The base AWS credentials every backend signs or calls with come from
:meth:`MintContext.aws_credentials`: STS AssumeRole when the configuration names a role, else the
default credential chain, cached per ``(role_arn, region, external_id)`` (DESIGN invariant 3).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from datetime import datetime, timezone

from ._aws import AwsCredentials, AwsSource, default_session_name
from ._config import AwsIamConfig
from ._errors import ConfigError, ConfigProblem
from ._leases import Clock, Counters, Lease, Leases
from ._service import ServiceLoop, current_source
from ._sigv4 import TokenSigner

__all__ = ["MintContext", "sts_key"]

log = logging.getLogger("iampool")

# botocore hands out default-chain snapshots with at least its mandatory refresh window left.
_DEFAULT_CHAIN_VALIDITY = 600.0


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class MintContext:
    """The leases, clock, margins, counters and token signer a backend mints with.

    ``ttl`` bounds the reuse of STS credentials and discovered endpoints, ``token_reuse`` that of
    RDS auth tokens; nothing is served past its real expiry minus ``expiry_margin``.
    """

    leases: Leases
    service: ServiceLoop
    counters: Counters
    clock: Clock
    ttl: float
    token_reuse: float
    expiry_margin: float
    signer: TokenSigner = dataclasses.field(default_factory=TokenSigner)

    @property
    def source(self) -> AwsSource:
        """The AWS source of the service loop this mint runs on (one per process)."""
        return current_source()

    def prepare(self, config: AwsIamConfig) -> None:
        """Build, in the background, the AWS client ``config``'s first fetch will need."""
        self.service.prepare(config.region)

    async def aws_credentials(self, config: AwsIamConfig, *, fresh: bool = False) -> AwsCredentials:
        """AWS credentials for ``config``: AssumeRole when it has a role, else the default chain.

        ``fresh``: credentials not due for their refresh (a retry after a refused login).
        """
        return await self.leases.get(
            sts_key(config), lambda: self.mint_aws_credentials(config), fresh=fresh
        )

    def expire_before(self, expires_at: float, now: float) -> float:
        """The last moment a credential expiring at ``expires_at`` may be served.

        The safety margin shrinks for short-lived credentials so they stay usable at all.
        """
        return expires_at - min(self.expiry_margin, max(expires_at - now, 0.0) / 4)

    async def mint_aws_credentials(self, config: AwsIamConfig) -> Lease[AwsCredentials]:
        """Fetch ``config``'s AWS credentials (the mint behind :meth:`aws_credentials`).

        Raises:
            ConfigError: the block has no region and none was read from an endpoint's host
                (``iampool._endpoints.with_region``); no AWS call is made.
        """
        if not config.region:
            raise ConfigError(
                ConfigProblem("region", "is required (an AWS region name such as 'us-east-1'): "
                                        "no endpoint host was given to read it from")
            )  # fmt: skip
        source = self.source
        if config.role_arn is not None:
            self.counters.sts_calls += 1
            credentials = await source.assume_role(
                role_arn=config.role_arn,
                region=config.region,
                session_name=config.role_session_name or default_session_name(),
                duration=config.session_duration,
                external_id=config.external_id,
            )
        else:
            credentials = await source.default_credentials(config.region)
        now = self.clock()
        expires_at = credentials.expires_at
        if expires_at is None:
            expires_at = now + _DEFAULT_CHAIN_VALIDITY
        valid_until = self.expire_before(expires_at, now)
        credentials = dataclasses.replace(
            credentials, expires_at=expires_at, valid_until=valid_until
        )
        log.info(
            "obtained AWS credentials from %s in %s, expiring %s",
            credentials.source,
            config.region,
            datetime.fromtimestamp(expires_at, timezone.utc).isoformat(timespec="seconds"),
        )
        return Lease(credentials, min(now + self.ttl, valid_until), valid_until)


@functools.lru_cache(maxsize=1024)
def sts_key(config: AwsIamConfig) -> tuple[str, str | None, str, str | None]:
    """The cache key of a configuration's AWS credentials (DESIGN invariant 3); one shared
    tuple per configuration, since every token's key holds it."""
    return ("aws", config.role_arn, config.region, config.external_id)
