"""Database endpoints: what a host name says (service, region), and which hosts and ports pass.

RDS, Aurora, RDS Proxy, Redshift, Redshift Serverless and Aurora DSQL endpoint names all carry
their region, so a block may leave ``region`` out when the host names it (the DSN's host, or
the ``iam_host`` a tunnelled connection signs for). One table, :data:`ENDPOINT_PATTERNS`, holds
the shapes; a host matches only as a whole, in ASCII, so ``rds.amazonaws.com.attacker.net`` or
``evil.com?x.us-east-1.rds.amazonaws.com`` names no region.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import re
import string
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ._errors import ConfigError, ConfigProblem, shown

if TYPE_CHECKING:
    from ._config import AwsIamConfig

__all__ = [
    "ENDPOINT_PATTERNS",
    "MAX_HOST_LENGTH",
    "EndpointName",
    "dsn_port",
    "endpoint_name",
    "host_problem",
    "port_problem",
    "region_of_host",
    "with_region",
]

Service = Literal["rds", "redshift", "redshift-serverless", "dsql"]

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_REGION = r"(?P<region>[a-z]{2}(?:-[a-z]+)+-\d{1,2})"
# Aurora writer, reader and custom endpoints, RDS Proxy (and its own endpoints,
# <name>.endpoint.proxy-<id>...) and Aurora Limitless shard groups put a prefix before the id.
_RDS_ID = r"(?:cluster-ro-|cluster-custom-|cluster-|proxy-|shardgrp-)?[a-z0-9]+"

# (service, what it is, pattern): each pattern matches a whole, lower-cased host name.
_TABLE: tuple[tuple[Service, str, str], ...] = (
    (
        "rds",
        "RDS, Aurora or RDS Proxy: <name>.[cluster-|cluster-ro-|cluster-custom-|proxy-]<id>."
        "<region>.rds.amazonaws.com (also .com.cn)",
        rf"(?:{_LABEL}\.)+{_RDS_ID}\.{_REGION}\.rds\.amazonaws\.com(?:\.cn)?",
    ),
    (
        "rds",
        "RDS in China, newer names: <name>.<id>.rds.<region>.amazonaws.com.cn",
        rf"(?:{_LABEL}\.)+{_RDS_ID}\.rds\.{_REGION}\.amazonaws\.com\.cn",
    ),
    (
        "redshift",
        "Redshift provisioned: <cluster>.<id>.<region>.redshift.amazonaws.com",
        rf"{_LABEL}\.[a-z0-9]+\.{_REGION}\.redshift\.amazonaws\.com(?:\.cn)?",
    ),
    (
        "redshift-serverless",
        "Redshift Serverless: <workgroup>.<account>.<region>.redshift-serverless.amazonaws.com",
        rf"{_LABEL}\.\d{{12}}\.{_REGION}\.redshift-serverless\.amazonaws\.com(?:\.cn)?",
    ),
    (
        "dsql",
        "Aurora DSQL: <cluster id>.dsql.<region>.on.aws",
        rf"[a-z0-9]+\.dsql(?:-[a-z0-9]+)?\.{_REGION}\.on\.aws",
    ),
)
ENDPOINT_PATTERNS: tuple[tuple[Service, str, re.Pattern[str]], ...] = tuple(
    (service, kind, re.compile(pattern, re.ASCII)) for service, kind, pattern in _TABLE
)


@dataclass(frozen=True, slots=True)
class EndpointName:
    """An AWS database endpoint recognised by its host name."""

    service: Service
    region: str


def endpoint_name(host: str) -> EndpointName | None:
    """The service and region an endpoint's host name carries, or ``None`` for any other host
    (an address, a tunnel, a custom DNS name, a lookalike)."""
    if not host.isascii():  # "K".lower() is "k": match what was written, not a folding of it
        return None
    name = host.lower()
    name = name[:-1] if name.endswith(".") else name
    if len(name) > 253:  # no DNS name is longer; the patterns need not look at more
        return None
    for service, _, pattern in ENDPOINT_PATTERNS:
        found = pattern.fullmatch(name)
        if found:
            return EndpointName(service, found.group("region"))
    return None


def region_of_host(host: str) -> str | None:
    """The region an endpoint's host name carries, else ``None``."""
    found = endpoint_name(host)
    return found.region if found else None


def with_region(config: AwsIamConfig, host: str | None) -> AwsIamConfig:
    """``config`` with its region: the block's, else the one the endpoint's host names.

    ``host`` is the endpoint the credentials are for (for a tunnelled connection, ``iam_host``,
    not the address dialled).

    Raises:
        ConfigError: the block's region and the host's disagree, or neither names one.
    """
    named = region_of_host(host) if host else None
    if config.region:
        if named is not None and named != config.region:
            raise ConfigError(
                ConfigProblem("region", f"is {config.region!r} but the endpoint {host!r} is in "
                                        f"{named!r}; fix one of them, or leave region out to "
                                        "take the endpoint's")
            )  # fmt: skip
        return config
    if named is None:
        if host:
            why = (
                f"the host {host!r} names no region (endpoint names do: "
                "<name>.<id>.<region>.rds.amazonaws.com, <cluster>.<id>.<region>."
                "redshift.amazonaws.com, <id>.dsql.<region>.on.aws; through a tunnel, add "
                "iam_host=<endpoint name> to the DSN)"
            )
        else:
            why = "no endpoint host is given to read it from"
        raise ConfigError(
            ConfigProblem("region", f"is required (an AWS region name such as 'us-east-1'): {why}")
        )
    return _with(config, named)


@functools.lru_cache(maxsize=256)
def _with(config: AwsIamConfig, region: str) -> AwsIamConfig:
    # One configuration per (block, region): authenticators for many endpoints of one block
    # (tenants, replicas) share it, as they share the block.
    return dataclasses.replace(config, region=region)


# Host and port checks shared by the DSN parser and auth_for. What passes is exactly what the
# driver is given, as keywords: a host name of letters, digits, ".", "-" and "_" (or an IPv6
# address) and a port from 1 to 65535. Anything a driver could read as something else is refused:
# a path (a Unix socket, where no TLS is used), several hosts, a value still percent-encoded,
# whitespace or control characters.

MAX_HOST_LENGTH = 253  # the longest DNS name
_MAX_LABEL_LENGTH = 63
_HOST_CHARACTERS = frozenset(string.ascii_letters + string.digits + ".-_")
_SHOWN = 40  # characters of a rejected value echoed in a message
_PORT_RULE = "a number from 1 to 65535"


def host_problem(host: object, field: str) -> ConfigProblem | None:
    """Why ``host`` (already percent-decoded) cannot be a database endpoint, or ``None``.

    ``field`` names where it came from (``"host"``, ``"dsn host"``, ``"dsn ?host="``).
    """
    if not isinstance(host, str):
        kind = type(host).__name__
        return ConfigProblem(field, f"must be a string (a host name or IP address), not {kind}")
    reason = _host_reason(host)
    return None if reason is None else ConfigProblem(field, reason)


def _host_reason(host: str) -> str | None:
    fix = "give the endpoint's host name or IP address"
    if not host:
        return f"is empty; {fix}"
    if len(host) > MAX_HOST_LENGTH:
        return f"is {len(host)} characters long; a host name has at most {MAX_HOST_LENGTH}"
    quoted = shown(host, _SHOWN)
    if "/" in host or "\\" in host or host[0] in "@.":
        return (
            f"{quoted} is a path or socket name: iampool connects over TCP with TLS only, "
            f"never to a Unix socket; {fix}"
        )
    if "," in host:
        return (
            f"{quoted} names several hosts: tokens are signed for one host; use the cluster "
            "endpoint (or RDS Proxy)"
        )
    if any(c.isspace() or not c.isprintable() for c in host):
        return f"{quoted} contains whitespace or a control character; {fix}"
    if "%" in host:
        return (
            f"{quoted} is still percent-encoded after decoding (encoded twice?); "
            "percent-encode the host once at most"
        )
    if not host.isascii():
        return f"{quoted} is not ASCII; write an internationalized name in its IDNA form (xn--...)"
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return (
                f"{quoted} is not a valid IPv6 address (only IPv6 addresses contain ':'; a port "
                "goes in the port field)"
            )
        return None
    wrong = "".join(sorted(set(host) - _HOST_CHARACTERS))
    if wrong:
        return (
            f"{quoted} contains {wrong!r}; a host name has only letters, digits, '.', '-' and '_'"
        )
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if any(not label for label in labels):
        return f"{quoted} has an empty label ('..'); {fix}"
    if any(len(label) > _MAX_LABEL_LENGTH for label in labels):
        return f"{quoted} has a label longer than {_MAX_LABEL_LENGTH} characters"
    return None


def port_problem(port: object, field: str) -> ConfigProblem | None:
    """Why ``port`` (an argument, not DSN text) cannot be a database port, or ``None``."""
    if isinstance(port, bool) or not isinstance(port, int):
        return ConfigProblem(field, f"must be an int, {_PORT_RULE}, not {type(port).__name__}")
    if not 1 <= port <= 65535:
        return ConfigProblem(field, f"is {port}; it must be {_PORT_RULE}")
    return None


def dsn_port(text: str, field: str) -> tuple[int | None, ConfigProblem | None]:
    """The port written in a DSN (``""`` means none given), or why it is not one."""
    if not text:
        return None, None
    if not (text.isascii() and text.isdigit()):
        # Not echoed: it may be a password's tail (a '/', '?' or '#' in it, not encoded).
        return None, ConfigProblem(field, f"is not {_PORT_RULE}")
    if len(text) > 5 or not 1 <= int(text) <= 65535:
        return None, ConfigProblem(field, f"{shown(text, _SHOWN)} is not {_PORT_RULE}")
    return int(text), None
