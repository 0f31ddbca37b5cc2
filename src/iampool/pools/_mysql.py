"""What aiomysql and asyncmy share: which MySQL settings are refused and why, the DSN's options
as keyword arguments, how a refused login looks, and a TLS failure in words.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any, Literal

from .._errors import ConfigError, ConfigProblem
from ._dialer import Refusal, throttled
from ._dsn import Target
from ._plan import Vetted, refuse_owned, refuse_unvetted

__all__ = [
    "ALLOWED",
    "REFUSED",
    "MySQLDriver",
    "mysql_options",
    "mysql_refusal",
    "tls_failure",
    "vet_mysql",
]

_ACCESS_DENIED = 1045
_CANNOT_CONNECT = 2003  # CR_CONN_HOST_ERROR: both drivers' error for a failed socket or handshake

MySQLDriver = Literal["aiomysql", "asyncmy"]

# Settings of aiomysql and asyncmy that would send the token somewhere else than the endpoint it
# is signed for, or open the client up to the server: refused with the reason, from a DSN or a
# keyword argument alike. What stays allowed does neither: init_command and sql_mode run after
# the login, on the authenticated session; server_public_key only encrypts a password on
# connections without TLS, which iampool never opens; conv, cursor classes, echo, charset,
# program_name, timeouts and asyncmy's auth_plugin_map are the application's own business.
REFUSED = {
    "read_default_file": (
        "reads host, port, socket, user and password from an option file, which would replace "
        "the endpoint the IAM token is signed for; pass settings as keyword arguments"
    ),
    "read_default_group": (
        "reads an option file (asyncmy: /etc/my.cnf when none is named) whose host, port or "
        "socket would replace the endpoint the IAM token is signed for"
    ),
    "unix_socket": (
        "connects to a local socket instead of the DSN's endpoint, so the IAM token would not "
        "reach the server the TLS settings check"
    ),
    "sock": (
        "hands over a socket already connected somewhere iampool did not check; give the "
        "endpoint in the DSN"
    ),
}
_LOCAL_FILES = 0x80  # CLIENT_LOCAL_FILES, the same bit in both drivers
_LOCAL_INFILE = (
    "would let the server read any file this process can read (LOAD DATA LOCAL INFILE), and "
    "with sslmode=require the server is not even verified; load files through the application"
)
_TEXT_OPTIONS = ("charset", "init_command", "program_name", "sql_mode")
# Each driver's settings that change nothing of where the login goes or how it is protected
# (local_infile and client_flag only without local files: checked above).
ALLOWED: dict[MySQLDriver, frozenset[str]] = {
    "aiomysql": frozenset(
        {
            "autocommit", "charset", "client_flag", "connect_timeout", "conv", "cursorclass",
            "echo", "init_command", "local_infile", "loop", "program_name",
            "server_public_key", "sql_mode", "ssl", "use_unicode",
        }
    ),
    "asyncmy": frozenset(
        {
            "auth_plugin_map", "autocommit", "binary_prefix", "charset", "client_flag",
            "connect_timeout", "conv", "cursor_cls", "echo", "init_command", "local_infile",
            "max_allowed_packet", "program_name", "query_callback", "read_timeout",
            "server_public_key", "sql_mode", "ssl", "stmt_cache_size", "use_unicode",
        }
    ),
}  # fmt: skip
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def vet_mysql(
    target: Target,
    driver_kwargs: Mapping[str, Any],
    *,
    pool: bool,
    driver: MySQLDriver,
    owned: tuple[str, ...],
    pool_options: tuple[str, ...],
) -> Vetted:
    """Either MySQL adapter's ``vet``: the pool's own options (``pool_options``) apart, the TLS
    decision the plan's, the rest judged by :func:`mysql_options`."""
    kwargs = dict(driver_kwargs)
    for_pool = {name: kwargs.pop(name) for name in pool_options if pool and name in kwargs}
    kwargs.pop("ssl", None)  # the plan's TLS decision
    options = mysql_options(target, kwargs, driver=driver, owned=owned)
    return Vetted({**options, **kwargs}, for_pool)


def mysql_options(
    target: Target,
    driver_kwargs: Mapping[str, Any],
    *,
    driver: MySQLDriver,
    owned: tuple[str, ...],
) -> dict[str, Any]:
    """The DSN's query options as keyword arguments of either MySQL driver, once what would
    redirect or weaken the connection is refused (with the reason) in them and in
    ``driver_kwargs``, as are the ``owned`` keywords iampool sets itself and CA files that
    cannot be read.

    Raises:
        ConfigError: every problem of the DSN, else every problem of the keyword arguments.
    """
    settings = _dsn_options(target.options, driver)
    problems = [
        ConfigProblem(name, reason) for name, reason in REFUSED.items() if name in driver_kwargs
    ]
    if _truthy(driver_kwargs.get("local_infile")):
        problems.append(ConfigProblem("local_infile", _LOCAL_INFILE))
    flags = driver_kwargs.get("client_flag", 0)
    if isinstance(flags, bool) or not isinstance(flags, int):
        problems.append(ConfigProblem("client_flag", "must be an integer of CLIENT flags"))
    elif flags & _LOCAL_FILES:
        problems.append(
            ConfigProblem("client_flag", f"sets CLIENT_LOCAL_FILES, which {_LOCAL_INFILE}")
        )
    if problems:
        raise ConfigError(problems, context="driver keyword")
    refuse_owned(driver_kwargs, owned)
    refuse_unvetted(driver_kwargs, ALLOWED[driver], driver, "driver keyword")
    return settings


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in (*_FALSE, "")
    return bool(value)


def _dsn_options(options: Mapping[str, str], driver: MySQLDriver = "aiomysql") -> dict[str, Any]:
    """Keyword arguments from the DSN query (``?charset=utf8mb4&connect_timeout=5``)."""
    settings: dict[str, Any] = {}
    problems = []
    for name, value in options.items():
        lowered = value.strip().lower()
        if name in REFUSED:
            problems.append(ConfigProblem(name, REFUSED[name]))
        elif name == "local_infile" and lowered not in _FALSE:
            problems.append(ConfigProblem(name, _LOCAL_INFILE))
        elif name in _TEXT_OPTIONS:
            settings[name] = value
        elif name in ("autocommit", "local_infile") and lowered in (*_TRUE, *_FALSE):
            settings[name] = lowered in _TRUE
        elif name == "connect_timeout" and _positive_number(value):
            settings[name] = float(value)
        else:
            allowed = ", ".join((*_TEXT_OPTIONS, "autocommit", "connect_timeout", "local_infile=0"))
            problems.append(
                ConfigProblem(name, f"is not a MySQL DSN option iampool understands ({allowed}); "
                                    f"pass other {driver} settings as keyword arguments")
            )  # fmt: skip
    if problems:
        raise ConfigError(problems, context="DSN")
    return settings


def _positive_number(text: str) -> bool:
    # ASCII digits only: str.isdigit() accepts other scripts' digits, and "1e400" is inf.
    whole, _, fraction = text.partition(".")
    digits = whole + fraction
    return 0 < len(text) <= 12 and digits.isascii() and digits.isdigit() and float(text) > 0


def tls_failure(exc: BaseException, endpoint: str) -> BaseException | None:
    """The driver's "Can't connect" error, naming the TLS problem that caused it (aiomysql
    keeps that in ``__cause__`` only); ``None`` for other errors."""
    cause = exc.__cause__
    if not (exc.args and exc.args[0] == _CANNOT_CONNECT and isinstance(cause, ssl.SSLError)):
        return None
    text = f"Can't connect to MySQL server at {endpoint}: the TLS handshake failed: "
    if isinstance(cause, ssl.SSLCertVerificationError):
        text += (
            f"certificate verify failed: {cause.verify_message} (check that sslrootcert is the "
            "CA that signed the server's certificate and, with verify-full, that the DSN's host "
            "is a name the certificate covers)"
        )
    else:
        text += str(cause)
    replacement = type(exc)(_CANNOT_CONNECT, text)
    replacement.__cause__ = cause
    return replacement


def mysql_refusal(exc: BaseException, error_class: type[BaseException]) -> Refusal | None:
    """A refused login in either driver's ``OperationalError`` (``error_class``): 1045, which
    is throttled when its text says so (RDS's "too many competing requests")."""
    if isinstance(exc, error_class) and exc.args and exc.args[0] == _ACCESS_DENIED:
        said = str(exc.args[1]) if len(exc.args) > 1 else "access denied"
        return Refusal("throttled" if throttled(said) else "rejected", said)
    return None
