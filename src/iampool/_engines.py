"""``do_connect``: IAM logins for synchronous SQLAlchemy engines (psycopg2, PyMySQL,
redshift_connector), from the same cache and with the same checks as the async path.

SQLAlchemy calls a ``do_connect`` listener before each new DBAPI connection with the keyword
arguments it is about to pass the driver; the listener puts a current login (a cached token or
Redshift password, ``DbAuth.credentials_sync``) and the TLS settings the DSN asked for into
them. Everything is checked when the listener is made, before any AWS call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._cache import CredentialCache, default_cache
from ._config import ConfigLike, coerce_config
from ._errors import ConfigError, ConfigProblem
from .auth import auth_for, prefetch
from .pools._dsn import libpq_tls, parse_target, tls_context

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

__all__ = ["DoConnect", "do_connect"]

DoConnect = Callable[[Any, Any, list[Any], dict[str, Any]], None]

# SQLAlchemy's synchronous drivers served, per engine (the URL's "<engine>+<driver>").
_DRIVERS = {
    "postgresql": ("psycopg2",),
    "mysql": ("pymysql",),
    "redshift": ("redshift_connector",),
}
# Other spellings of what the listener sets (per driver and SQLAlchemy version), and the URL's
# TLS options a driver does not take (the listener gives it its own form of them): dropped.
_ALIASES = {
    "psycopg2": ("database",),
    "pymysql": ("db", "passwd", "sslmode", "sslrootcert"),
    "redshift_connector": (),
}
# redshift_connector's sslmode: it always verifies the CA ("require" is its verify-ca).
_REDSHIFT_SSLMODES = {
    "require": "verify-ca",
    "verify-ca": "verify-ca",
    "verify-full": "verify-full",
}


def do_connect(
    url: str | URL, *, aws_iam: ConfigLike, cache: CredentialCache | None = None
) -> DoConnect:
    """A ``do_connect`` listener that logs a synchronous engine in with IAM credentials::

        engine = create_engine(url)
        event.listen(engine, "do_connect", iampool.superset.do_connect(url, aws_iam=cfg))

    ``url`` is the engine's URL (``postgresql+psycopg2://``, ``mysql+pymysql://`` or
    ``redshift+redshift_connector://``), without a password; its user must be ``db_username``
    (Redshift: none, or ``db_username``). Each new connection gets a current login from the
    cache and TLS as the URL asks: ``sslmode=require`` (the default), ``verify-ca`` or
    ``verify-full``, with ``sslrootcert``.

    Raises:
        ConfigError: invalid configuration or URL (another driver, a password, another user, a
            TLS mode that could fall back to plain text, ...), before any AWS call.
    """
    text = url if isinstance(url, str) else url.render_as_string(hide_password=False)
    scheme, separator, rest = text.partition("://")
    engine, _, driver = scheme.lower().partition("+")
    if not separator or driver not in _DRIVERS.get(engine, ()):
        served = ", ".join(f"{name}+{drivers[0]}://" for name, drivers in _DRIVERS.items())
        raise ConfigError(ConfigProblem("url", f"do_connect serves {served}"), context="DSN")
    config = coerce_config(aws_iam)
    target = parse_target(f"{engine}://{rest}", config)
    if driver == "redshift_connector" and target.sslrootcert is not None:
        raise ConfigError(
            ConfigProblem("sslrootcert", "redshift_connector cannot take a CA file: it trusts "
                                         "the system store (SSL_CERT_FILE)"),
            context="DSN",
        )  # fmt: skip
    if target.iam_host is not None:
        raise ConfigError(
            ConfigProblem("iam_host", "is not supported by do_connect: connect to the endpoint's "
                                      "name (a tunnel's local port can resolve to it instead)"),
            context="DSN",
        )  # fmt: skip
    auth = auth_for(
        config, host=target.host, port=target.port, cache=cache or default_cache()
    )  # fmt: skip
    settings: dict[str, Any] = {"host": target.host, "port": target.port}
    if driver == "psycopg2":
        # An encrypted GSSAPI session would stand in for TLS; RDS speaks TLS only.
        settings.update(libpq_tls(target), gssencmode="disable", dbname=target.database)
    elif driver == "pymysql":
        settings.update(ssl=tls_context(target), database=target.database)
    else:
        settings.update(
            database=target.database, ssl=True, sslmode=_REDSHIFT_SSLMODES[target.sslmode],
            iam=False,
        )  # fmt: skip
    settings = {name: value for name, value in settings.items() if value is not None}
    aliases = _ALIASES[driver]
    prefetch(auth)

    def listener(dialect: Any, record: Any, cargs: list[Any], cparams: dict[str, Any]) -> None:
        login = auth.credentials_sync()
        for alias in aliases:
            cparams.pop(alias, None)
        cparams.update(settings)
        cparams["user"] = login.user
        cparams["password"] = login.password
        if login.host is not None and target.host is None:  # Redshift: discovered
            cparams["host"], cparams["port"] = login.host, login.port

    return listener
