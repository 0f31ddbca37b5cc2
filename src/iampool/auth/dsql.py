"""Aurora DSQL: IAM auth tokens signed locally with cached AWS credentials.

DSQL accepts IAM tokens only. The ``admin`` role logs in with a ``DbConnectAdmin`` token, every
other role with a ``DbConnect`` one; a token names the cluster's host (no port, no user) and
lives as long as its signer chose (``token_duration``). The region comes from the block, or
from the endpoint's host name, ``<cluster id>.dsql.<region>.on.aws``.
"""

from __future__ import annotations

import functools

from .._config import AwsIamConfig
from .._endpoints import with_region
from .._errors import ConfigError, ConfigProblem
from .._minting import MintContext
from ._token import TokenAuth, TokenKind

__all__ = ["ADMIN_ROLE", "DsqlAuth"]

ADMIN_ROLE = "admin"


class DsqlAuth(TokenAuth):
    """``DbAuth`` for Aurora DSQL: a token per (cluster host, role, region, lifetime, identity),
    reused as ``TokenAuth`` says, never longer than ``token_duration``."""

    __slots__ = ()

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
        if problems:
            raise ConfigError(problems)
        config = with_region(config, host)
        kind = _kind(admin=config.db_username == ADMIN_ROLE, lifetime=config.token_duration)
        super().__init__(config, kind, host=host, port=port, context=context)  # region resolved


@functools.lru_cache(maxsize=64)
def _kind(*, admin: bool, lifetime: int) -> TokenKind:
    name, action = ("DSQL admin token", "DbConnectAdmin") if admin else ("DSQL token", "DbConnect")
    return TokenKind(name, service="dsql", action=action, lifetime=lifetime)
