"""Host and port checks shared by the DSN parser and ``auth_for``.

What passes here is exactly what the driver is given, as keywords: a host name of letters,
digits, ``.``, ``-`` and ``_`` (or an IPv6 address) and a port from 1 to 65535. Anything a driver
could read as something else is refused: a path (a Unix socket, where no TLS is used), several
hosts, a value still percent-encoded, whitespace or control characters.
"""

from __future__ import annotations

import ipaddress
import string

from ._errors import ConfigProblem

__all__ = ["MAX_HOST_LENGTH", "dsn_port", "host_problem", "port_problem"]

MAX_HOST_LENGTH = 253  # the longest DNS name
_MAX_LABEL_LENGTH = 63
_HOST_CHARACTERS = frozenset(string.ascii_letters + string.digits + ".-_")
_SHOWN = 40  # characters of a rejected value echoed in a message
_PORT_RULE = "a number from 1 to 65535"


def _shown(value: str) -> str:
    return repr(value[:_SHOWN]) + ("..." if len(value) > _SHOWN else "")


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
    shown = _shown(host)
    if "/" in host or "\\" in host or host[0] in "@.":
        return (
            f"{shown} is a path or socket name: iampool connects over TCP with TLS only, "
            f"never to a Unix socket; {fix}"
        )
    if "," in host:
        return (
            f"{shown} names several hosts: tokens are signed for one host; use the cluster "
            "endpoint (or RDS Proxy)"
        )
    if any(c.isspace() or not c.isprintable() for c in host):
        return f"{shown} contains whitespace or a control character; {fix}"
    if "%" in host:
        return (
            f"{shown} is still percent-encoded after decoding (encoded twice?); "
            "percent-encode the host once at most"
        )
    if not host.isascii():
        return f"{shown} is not ASCII; write an internationalized name in its IDNA form (xn--...)"
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return (
                f"{shown} is not a valid IPv6 address (only IPv6 addresses contain ':'; a port "
                "goes in the port field)"
            )
        return None
    wrong = "".join(sorted(set(host) - _HOST_CHARACTERS))
    if wrong:
        return f"{shown} contains {wrong!r}; a host name has only letters, digits, '.', '-' and '_'"
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if any(not label for label in labels):
        return f"{shown} has an empty label ('..'); {fix}"
    if any(len(label) > _MAX_LABEL_LENGTH for label in labels):
        return f"{shown} has a label longer than {_MAX_LABEL_LENGTH} characters"
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
    if not (text.isascii() and text.isdigit() and len(text) <= 5) or not 1 <= int(text) <= 65535:
        return None, ConfigProblem(field, f"{_shown(text)} is not {_PORT_RULE}")
    return int(text), None
