"""What RDS and Aurora DSQL share: tokens signed locally with cached AWS credentials.

A token is reused while both it and the credentials that signed it stay valid (minus the cache's
safety margin), never longer than ``token_reuse``, and re-signed before that. Signing is local:
with the AWS credentials cached, a missing or due token is signed at once on the caller's thread
(a few microseconds); only a call to STS goes to the service loop.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import NoReturn

from .._aws import AwsCredentials
from .._config import AwsIamConfig
from .._credentials import DbCredentials, refuse_pickling
from .._leases import Lease
from .._minting import MintContext, sts_key

__all__ = ["TokenAuth", "TokenKind"]


@dataclass(frozen=True)
class TokenKind:
    """What a service's tokens are: the SigV4 service and action, and how long one lives."""

    name: str  # in messages: "RDS token", "DSQL admin token"
    service: str
    action: str
    lifetime: int


class TokenAuth:
    """``DbAuth`` for a token per (endpoint, user, kind of token, signing identity)."""

    # An application may hold one per endpoint (query workers serving many tenant databases).
    __slots__ = (
        "_config", "_context", "_fresh", "_host", "_key", "_kind", "_leases", "_port", "_sts_key",
        "_user",
    )  # fmt: skip

    def __init__(
        self, config: AwsIamConfig, kind: TokenKind, *, host: str, port: int, context: MintContext
    ) -> None:
        assert config.db_username is not None  # checked by the backend's constructor
        self._config = config
        self._kind = kind
        self._user = config.db_username
        self._host = host
        self._port = port
        self._context = context
        self._leases = context.leases
        self._sts_key = sts_key(config)
        self._fresh = False  # sign the next token with credentials not due for refresh
        # Tokens follow the identity that signs them: the configuration's STS cache key. The
        # parts every endpoint of one configuration shares are one tuple (a small key per token).
        self._key = (host, port, _scope(kind, self._user, config.region, self._sts_key))
        context.prepare(config)

    @property
    def config(self) -> AwsIamConfig:
        """The configuration this authenticator serves."""
        return self._config

    @property
    def endpoint(self) -> tuple[str, int]:
        """The host and port tokens are for."""
        return self._host, self._port

    def __reduce__(self) -> NoReturn:
        refuse_pickling(self)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(user={self._user!r}, endpoint='{self._host}:{self._port}', "
            f"region={self._config.region!r})"
        )

    async def credentials(self) -> DbCredentials:
        """The current token as ``DbCredentials``; a cached one when warm."""
        return await self._leases.get(self._key, self._mint, self._mint_now)

    def credentials_sync(self, timeout: float | None = None) -> DbCredentials:
        """``credentials()`` for synchronous code: blocks on a miss (see ``DbAuth``)."""
        return self._leases.get_blocking(self._key, self._mint, self._mint_now, timeout=timeout)

    def prefetch(self) -> None:
        """Start minting a token (and its credentials) in the background, if none is cached."""
        self._leases.prefetch(self._key, self._mint, self._mint_now)

    def invalidate(self) -> None:
        """Drop the cached token (after the database refused it).

        The next token is signed with credentials that are not due for their refresh: the one
        retry after a refused login must not get a token whose credentials are about to expire.
        """
        self._fresh = True
        self._leases.invalidate(self._key)

    def _mint_now(self, current: DbCredentials | None) -> Lease[DbCredentials] | None:
        mint = functools.partial(self._context.mint_aws_credentials, self._config)
        aws = self._leases.peek(self._sts_key, mint, fresh=self._fresh)
        return None if aws is None else self._sign(aws)

    async def _mint(self) -> Lease[DbCredentials]:
        aws = await self._context.aws_credentials(self._config, fresh=self._fresh)
        return self._sign(aws)

    def _sign(self, aws: AwsCredentials) -> Lease[DbCredentials]:
        context, kind = self._context, self._kind
        self._fresh = False
        now = context.clock()
        token = context.signer.sign(
            aws,
            host=self._host,
            port=self._port,
            user=self._user,
            region=self._config.region,
            service=kind.service,
            action=kind.action,
            expires=kind.lifetime,
        )
        context.counters.tokens_signed += 1
        # Its X-Amz-Date is to the second: so is its expiry, shared by every token signed then.
        expires_at = min(float(int(now) + kind.lifetime), aws.expires_at or float("inf"))
        usable_until = min(now + context.token_reuse, context.expire_before(expires_at, now))
        if aws.valid_until is not None:  # never past the signing credentials' own cutoff
            usable_until = min(usable_until, aws.valid_until)
        credentials = DbCredentials(
            self._user, token, self._host, self._port, None, _utc(expires_at)
        )
        return Lease(credentials, usable_until)


@functools.lru_cache(maxsize=256)
def _scope(
    kind: TokenKind, user: str, region: str, sts: tuple[str, str | None, str, str | None]
) -> tuple[object, ...]:
    # Strings and numbers only: a key is hashed on every call, and theirs hash fast (a
    # dataclass's __hash__ alone took ~250 ns).
    return (kind.name, user, region, kind.service, kind.action, kind.lifetime, sts)


_last_utc: tuple[float, datetime] = (float("nan"), datetime.min)


def _utc(epoch: float) -> datetime:
    # Tokens signed in the same second expire in the same second: share one datetime.
    global _last_utc
    cached_epoch, moment = _last_utc
    if epoch != cached_epoch:
        moment = datetime.fromtimestamp(epoch, timezone.utc)
        _last_utc = (epoch, moment)
    return moment
