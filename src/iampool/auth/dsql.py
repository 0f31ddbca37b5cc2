"""Aurora DSQL: IAM auth tokens signed locally with cached AWS credentials.

DSQL accepts IAM tokens only. The ``admin`` role logs in with a ``DbConnectAdmin`` token, every
other role with a ``DbConnect`` one; a token names the cluster's host (no port, no user) and
lives as long as its signer chose (``token_duration``). The region comes from the block, or
from the endpoint's host name, ``<cluster id>.dsql.<region>.on.aws``.
"""

from __future__ import annotations

import dataclasses
import functools
import re

from .._config import AwsIamConfig
from .._errors import ConfigError, ConfigProblem
from .._minting import MintContext
from ._token import TokenAuth, TokenKind

__all__ = ["ADMIN_ROLE", "DsqlAuth", "region_of_endpoint"]

ADMIN_ROLE = "admin"
_ENDPOINT = re.compile(r"[a-z0-9]+\.dsql(?:-[a-z0-9]+)?\.([a-z]{2}(?:-[a-z]+)+-\d{1,2})\.on\.aws")


def region_of_endpoint(host: str) -> str | None:
    """The region an Aurora DSQL endpoint names (``abc.dsql.us-east-1.on.aws``), else None."""
    found = _ENDPOINT.fullmatch(host.lower().rstrip("."))
    return found.group(1) if found else None


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
        region = config.region or (region_of_endpoint(host) if host else None)
        if host and not region:
            problems.append(
                ConfigProblem("region", f"is required: the host {host!r} does not name one (a "
                                        "DSQL endpoint reads <id>.dsql.<region>.on.aws)")
            )  # fmt: skip
        if problems:
            raise ConfigError(problems)
        assert region is not None
        if region != config.region:
            config = dataclasses.replace(config, region=region)
        kind = _kind(admin=config.db_username == ADMIN_ROLE, lifetime=config.token_duration)
        super().__init__(config, kind, host=host, port=port, context=context)  # region resolved


@functools.lru_cache(maxsize=64)
def _kind(*, admin: bool, lifetime: int) -> TokenKind:
    name, action = ("DSQL admin token", "DbConnectAdmin") if admin else ("DSQL token", "DbConnect")
    return TokenKind(name, service="dsql", action=action, lifetime=lifetime)
