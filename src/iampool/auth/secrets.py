"""Secrets Manager: a database password kept in a secret (RDS's JSON), cached like credentials.

The secret is read with GetSecretValue (``AWSCURRENT``), with the block's role or the default
chain, once per herd; reused for ``secret_ttl`` seconds and refreshed ahead in the background;
served stale while a refresh fails (a password does not expire by time: what ends it is the
database refusing it). A login refused for its password calls :meth:`SecretsManagerAuth.refused`,
which drops the refused value once for the whole herd, so the next lookup reads the secret again
(``pools/_dialer`` retries within the block's ``rotation_window``).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, NoReturn

from .._aws import SecretValue
from .._config import AwsIamConfig
from .._credentials import DbCredentials, refuse_pickling
from .._endpoints import with_region
from .._errors import ConfigError, ConfigProblem, CredentialError, shown
from .._leases import Lease
from .._minting import MintContext, sts_key

__all__ = ["SecretsManagerAuth"]

# A value the database refused is read again from AWS at most once this often, however many
# logins it refuses: the rest retry with what AWS says is current (a rotation in progress).
REFETCH_INTERVAL = 1.0
# How long a secret is served past its ttl while reading it again fails (AWS unreachable): a
# password keeps working until it is rotated, which a refused login notices.
STALE_LIMIT = 86400.0

# The ``engine`` values of RDS's secret JSON, by the DSN engine they log in to.
_ENGINES = {
    "postgresql": frozenset({"postgres", "postgresql", "aurora-postgresql"}),
    "mysql": frozenset({"mysql", "mariadb", "aurora-mysql", "aurora"}),
    "redshift": frozenset({"redshift"}),
}


class SecretsManagerAuth:
    """``DbAuth`` for a password in Secrets Manager: user and password from the secret's JSON.

    ``host`` and ``port`` are the endpoint the DSN names (its ``iam_host`` behind a tunnel):
    a secret whose ``host`` or ``port`` disagrees is a ``ConfigError``. Without a host
    (``redshift://`` with no host) the secret's endpoint is used. ``engine`` is the DSN's
    (``postgresql``, ``mysql``, ``redshift``), checked against the secret's ``engine`` when it
    has one.
    """

    __slots__ = ("_config", "_context", "_engine", "_host", "_key", "_leases", "_port")

    def __init__(
        self,
        config: AwsIamConfig,
        *,
        context: MintContext,
        host: str | None = None,
        port: int | None = None,
        engine: str | None = None,
    ) -> None:
        if config.secret_id is None:
            raise ConfigError(
                ConfigProblem("secret_id", "is required for a password from Secrets Manager")
            )
        config = with_region(config, host)
        if not config.region:
            raise ConfigError(
                ConfigProblem("region", "is required (an AWS region name such as 'us-east-1'): "
                                        "secret_id is a name, not an ARN, and the endpoint's "
                                        "host names no region")
            )  # fmt: skip
        self._config = config
        self._context = context
        self._leases = context.leases
        self._host = host
        self._port = port
        self._engine = engine
        self._key = ("secret", config.secret_id, config.region, sts_key(config), host, port, engine)
        context.prepare(config)

    @property
    def config(self) -> AwsIamConfig:
        """The configuration this authenticator serves."""
        return self._config

    def __reduce__(self) -> NoReturn:
        refuse_pickling(self)

    def __repr__(self) -> str:
        return f"SecretsManagerAuth({self._config.secret_id!r}, region={self._config.region!r})"

    async def credentials(self) -> DbCredentials:
        """The login the secret holds; a cached one when warm."""
        return await self._leases.get(self._key, self._mint)

    def credentials_sync(self, timeout: float | None = None) -> DbCredentials:
        """``credentials()`` for synchronous code: blocks on a miss (see ``DbAuth``)."""
        return self._leases.get_blocking(self._key, self._mint, timeout=timeout)

    def prefetch(self) -> None:
        """Start reading the secret in the background, if no value is cached."""
        self._leases.prefetch(self._key, self._mint)

    def invalidate(self) -> None:
        """Drop the cached login: the next lookup reads the secret again."""
        self._leases.invalidate(self._key)

    def refused(self, credentials: DbCredentials) -> bool:
        """The database refused ``credentials`` for their password: drop the cached login if it
        is still that user and password and was read more than a second ago (one re-read per
        herd, at most one a second); whether it was dropped."""
        login = (credentials.user, credentials.password)
        return self._leases.invalidate_if(
            self._key,
            lambda cached: (cached.user, cached.password) == login,
            settled=REFETCH_INTERVAL,
        )

    @property
    def rotation_window(self) -> float:
        """Seconds a login refused for its password keeps trying (the block's
        ``rotation_window``)."""
        return float(self._config.rotation_window)

    async def _mint(self) -> Lease[DbCredentials]:
        context, config = self._context, self._config
        assert config.secret_id is not None
        aws = await context.aws_credentials(config)
        secret = await context.source.secret_value(
            aws, region=config.region, secret_id=config.secret_id
        )
        context.counters.api_calls += 1
        now = context.clock()
        usable_until = now + config.secret_ttl
        credentials = self._login(secret, datetime.fromtimestamp(usable_until, timezone.utc))
        return Lease(credentials, usable_until, now + max(STALE_LIMIT, config.secret_ttl))

    def _login(self, secret: SecretValue, expires_at: datetime) -> DbCredentials:
        """The login in the secret's JSON; its endpoint checked against the DSN's."""
        where = f"secret {self._config.secret_id} in {self._config.region}"
        document = _document(secret, where)
        user, password = document.get("username"), document.get("password")
        missing = [
            name
            for name, value in (("username", user), ("password", password))
            if not isinstance(value, str) or not value
        ]
        if missing:
            raise CredentialError(
                f"The {where} has no {' and no '.join(repr(name) for name in missing)} string: "
                'store RDS\'s JSON ({"username": ..., "password": ...}).',
                code="InvalidSecret",
                target=where,
            )
        assert isinstance(user, str)
        assert isinstance(password, str)
        host, port = self._endpoint(document, where)
        database = document.get("dbname")
        return DbCredentials(
            user=user,
            password=password,
            host=host,
            port=port,
            database=database if isinstance(database, str) and database else None,
            expires_at=expires_at,
        )

    def _endpoint(self, document: dict[str, Any], where: str) -> tuple[str | None, int | None]:
        """The endpoint to log in to: the DSN's, which the secret's ``host``, ``port`` and
        ``engine`` must not contradict; the secret's when the DSN names none."""
        problems: list[ConfigProblem] = []
        secret_host = document.get("host")
        if secret_host is not None and not isinstance(secret_host, str):
            secret_host = None
        secret_port = _port(document.get("port"))
        if secret_host and self._host and _name(secret_host) != _name(self._host):
            problems.append(
                ConfigProblem("host", f"the DSN names {shown(self._host)} but the {where} "
                                      f"names {shown(secret_host)}; point the DSN at the "
                                      "secret's endpoint (behind a tunnel: ?iam_host=)")
            )  # fmt: skip
        if secret_port is not None and self._port is not None and secret_port != self._port:
            problems.append(
                ConfigProblem("port", f"the DSN names {self._port} but the {where} names "
                                      f"{secret_port}; make them agree")
            )  # fmt: skip
        engine = document.get("engine")
        if (
            isinstance(engine, str)
            and self._engine in _ENGINES
            and engine.lower() in set().union(*_ENGINES.values())
            and engine.lower() not in _ENGINES[self._engine]
        ):
            problems.append(
                ConfigProblem("engine", f"the {where} is for engine {shown(engine)}, not a "
                                        f"{self._engine} DSN")
            )  # fmt: skip
        if problems:
            raise ConfigError(problems, context="secret")
        host = self._host or secret_host or None
        port = self._port if self._port is not None else secret_port
        return host, port


def _document(secret: SecretValue, where: str) -> dict[str, Any]:
    text = secret.text
    if text is None:
        raise CredentialError(
            f"The {where} holds binary data that is not UTF-8 text: store RDS's JSON.",
            code="InvalidSecret",
            target=where,
        )
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        document = None  # never quoted: the text is the secret
    if not isinstance(document, dict):
        raise CredentialError(
            f"The {where} is not a JSON object: store RDS's JSON "
            '({"username": ..., "password": ...}).',
            code="InvalidSecret",
            target=where,
        )
    return document


def _port(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 5:
        return int(value)
    return None


def _name(host: str) -> str:
    return host.lower().rstrip(".")
