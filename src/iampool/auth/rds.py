"""RDS / Aurora: IAM auth tokens signed locally with cached AWS credentials."""

from __future__ import annotations

from .._config import AwsIamConfig
from .._endpoints import with_region
from .._errors import ConfigError, ConfigProblem
from .._minting import MintContext
from .._sigv4 import RDS_TOKEN_LIFETIME
from ._token import TokenAuth, TokenKind

__all__ = ["RdsIamAuth"]

RDS_TOKEN = TokenKind("RDS token", service="rds-db", action="connect", lifetime=RDS_TOKEN_LIFETIME)


class RdsIamAuth(TokenAuth):
    """``DbAuth`` for Aurora PostgreSQL / MySQL and RDS: a token per (endpoint, user), valid
    15 minutes, bound to ``host:port`` and the database user (see ``TokenAuth`` for reuse)."""

    __slots__ = ()

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
        config = with_region(config, host)
        super().__init__(config, RDS_TOKEN, host=host, port=port, context=context)
