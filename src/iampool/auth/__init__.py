"""Backends behind ``DbAuth``: one module each, chosen from ``AwsIamConfig.backend``."""

from __future__ import annotations

from .._cache import CredentialCache, default_cache, mint_context
from .._config import AwsIamConfig, ConfigLike, coerce_config
from .._credentials import DbAuth
from .._endpoints import host_problem, port_problem
from .._errors import ConfigError, ConfigProblem
from ._token import TokenAuth
from .dsql import DsqlAuth
from .rds import RdsIamAuth
from .redshift import RedshiftAuth
from .secrets import SecretsManagerAuth

__all__ = [
    "DsqlAuth",
    "RdsIamAuth",
    "RedshiftAuth",
    "SecretsManagerAuth",
    "auth_for",
    "build_auth",
    "prefetch",
]


def auth_for(
    config: AwsIamConfig | ConfigLike,
    *,
    host: str | None = None,
    port: int | None = None,
    cache: CredentialCache | None = None,
) -> DbAuth:
    """The ``DbAuth`` for a configuration: RDS or Aurora DSQL tokens, Redshift temporary
    passwords, or a password from Secrets Manager (``secret_id``).

    ``host`` and ``port`` are the database endpoint: required for RDS and DSQL, whose tokens are
    signed for one endpoint (behind a tunnel: the endpoint's name, not the address dialled);
    optional for Redshift, whose endpoint is then looked up with DescribeClusters /
    GetWorkgroup, and for Secrets Manager, whose secret's ``host`` and ``port`` must agree
    with them when given. ``port`` falls back to the block's ``port``. A block without
    ``region`` takes it from the host's name (``<name>.<id>.<region>.rds.amazonaws.com``...).
    ``cache=None`` uses :func:`iampool.default_cache`.

    Raises:
        ConfigError: a host that is not one host name or IP address (a path, several hosts,
            whitespace, more than 253 characters, a malformed IPv6 address), a port that is
            not an ``int`` from 1 to 65535, or no region: neither in the block nor in the
            host's name (or the two disagree). Always before any AWS call.
    """
    config = coerce_config(config)
    # Checked before anything that calls AWS is built: the token is signed for these.
    invalid = [
        problem
        for problem in (
            host_problem(host, "host") if host is not None and host != "" else None,
            port_problem(port, "port") if port is not None else None,
        )
        if problem is not None
    ]
    if invalid:
        raise ConfigError(invalid, context="auth_for")
    return build_auth(config, host=host, port=port, cache=cache)


def build_auth(
    config: AwsIamConfig,
    *,
    host: str | None,
    port: int | None,
    cache: CredentialCache | None,
    engine: str | None = None,
) -> DbAuth:
    """:func:`auth_for` for a configuration, host and port already checked (a connect plan's).
    ``engine``: the DSN's (a secret's ``engine`` must match it).

    Raises:
        ConfigError: no host for RDS or DSQL, no port for RDS.
    """
    context = mint_context(cache if cache is not None else default_cache())
    port = port if port is not None else config.port
    if config.backend == "secrets-manager":
        return SecretsManagerAuth(config, context=context, host=host or None, port=port,
                                  engine=engine)  # fmt: skip
    if config.backend == "dsql":
        if not host:
            raise ConfigError(
                ConfigProblem("host", "is required for Aurora DSQL: tokens name the cluster's "
                                      "endpoint (<id>.dsql.<region>.on.aws)"),
                context="auth_for",
            )  # fmt: skip
        return DsqlAuth(config, host=host, port=port or 5432, context=context)
    if config.backend == "rds":
        problems = []
        if not host:
            problems.append(
                ConfigProblem("host", "is required for RDS: tokens are signed per endpoint")
            )
        if port is None:
            problems.append(
                ConfigProblem("port", "is required for RDS (5432 PostgreSQL, 3306 MySQL)")
            )
        if problems:
            raise ConfigError(problems, context="auth_for")
        assert host is not None
        assert port is not None
        return RdsIamAuth(config, host=host, port=port, context=context)
    return RedshiftAuth(config, context=context, host=host, port=port)


def prefetch(auth: DbAuth) -> None:
    """Start minting ``auth``'s credentials in the background (a pool is being created: its
    first connections will want them); nothing for an authenticator iampool did not build."""
    if isinstance(auth, (TokenAuth, RedshiftAuth, SecretsManagerAuth)):
        auth.prefetch()
