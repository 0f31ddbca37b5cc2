"""The options of ``iampool standin`` (run by ``iampool.testing._standin``).

Here, outside ``iampool.testing``, so that the ``iampool`` command builds its parser without
importing the testing kit (moto and the rest come with the ``testing`` extra).
"""

from __future__ import annotations

import argparse

__all__ = ["add_arguments"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The stand-in's options, on ``iampool standin``'s parser."""
    servers = parser.add_argument_group("servers (at least one; each an admin DSN)")
    servers.add_argument("--postgres", metavar="DSN", help="PostgreSQL behind an RDS-style gateway")
    servers.add_argument("--mysql", metavar="DSN", help="MySQL/MariaDB behind an RDS-style gateway")
    servers.add_argument(
        "--redshift", metavar="DSN", help="a Redshift provisioned cluster, emulated on PostgreSQL"
    )
    servers.add_argument(
        "--redshift-serverless",
        metavar="DSN",
        help="a Redshift Serverless workgroup, emulated on PostgreSQL",
    )
    servers.add_argument(
        "--dsql", metavar="DSN", help="an Aurora DSQL cluster (logs in as admin), on PostgreSQL"
    )
    parser.add_argument(
        "--login-user",
        metavar="NAME",
        help="the login user to create and log in as (default: unique, iampool_<pid>_<hex>)",
    )
    parser.add_argument(
        "--credentials-ttl",
        type=_seconds,
        metavar="SECONDS",
        help=(
            "STS credentials expire this many seconds after issue, and the tokens signed "
            "with them (default: as asked, an hour)"
        ),
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="API:KIND[:TIMES]",
        help=(
            "the next TIMES (1) calls of API (AssumeRole, GetClusterCredentials, ...; * for any) "
            "fail with KIND: throttle, server_error or access_denied; repeatable"
        ),
    )
    parser.add_argument(
        "--latency",
        action="append",
        default=[],
        metavar="API:SECONDS",
        help="every call of API waits SECONDS before its answer; repeatable",
    )
    parser.add_argument(
        "--login-rate",
        type=_whole,
        metavar="N",
        help="RDS/DSQL gateways refuse logins over N a second, as the services throttle",
    )
    parser.add_argument(
        "--session-lifetime",
        type=_seconds,
        metavar="SECONDS",
        help="the gateways cut every session after SECONDS (Aurora DSQL: 3600)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object instead of export lines"
    )
    parser.add_argument(
        "--env-file",
        metavar="PATH",
        help="also write the lines to PATH (whole, once ready): wait for it, then source it",
    )


def _whole(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 9:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text[:40]!r}")
    return int(text)


def _seconds(text: str) -> int:
    value = _whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more seconds, got {value}")
    return value
