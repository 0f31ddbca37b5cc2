"""psycopg 3 adapter: the real ``psycopg_pool.AsyncConnectionPool``, its connections opened by a
subclass of the pool's ``connection_class`` whose ``connect`` logs in through the dialer.

libpq reads most of its settings from the environment (``PGHOSTADDR``, ``PGHOST``,
``PGSSLMODE``, ...) and from a service file (``PGSERVICE``) when a connection does not give them.
So iampool gives libpq EVERY setting that decides where bytes go or how they are protected: its
own (host, port, TLS, user, database), the caller's, and for the rest their compiled-in
defaults, read from the installed libpq (``Conninfo.get_defaults()``), so an option a newer
libpq adds is pinned too. Only settings that change nothing of the sort (application name,
client encoding, server ``options``, TCP keepalives) may still come from elsewhere. libpq keeps
the password in the connection object it attaches to a failed attempt's error; iampool raises
errors without it.
"""

from __future__ import annotations

import asyncio
import functools
import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from .._credentials import DbCredentials
from .._errors import ConfigError, ConfigProblem, detached
from ._dialer import THROTTLED_TEXTS, Refusal, pg_refusal, tls_not_offered
from ._dsn import Target
from ._plan import Plan, Vetted
from ._tls import TlsStyle, libpq_server_name

if TYPE_CHECKING:
    from psycopg import AsyncConnection
    from psycopg.rows import TupleRow
    from psycopg_pool import AsyncConnectionPool

__all__ = ["TLS_STYLE", "classify", "close_pool", "connect", "create_pool", "libpq_settings", "vet"]

C = TypeVar("C", bound="AsyncConnection[Any]")

TLS_STYLE: TlsStyle = "libpq"

# libpq settings iampool decides from the DSN and aws_iam: an override could connect elsewhere
# than the token is signed for, log in otherwise, or weaken TLS.
OWNED = (
    "conninfo", "connect_timeout", "dbname", "gssencmode", "host", "hostaddr", "passfile",
    "password", "port", "requiressl", "service", "servicefile", "sslmode", "sslrootcert", "user",
)  # fmt: skip
# libpq settings that are refused outright, with the reason.
REFUSED = {
    "sslkeylogfile": "writes the TLS session keys, and so the token, to a file",
    "oauth_issuer": "is for OAuth logins; IAM authentication supplies the login",
    "oauth_client_id": "is for OAuth logins; IAM authentication supplies the login",
    "oauth_client_secret": "is for OAuth logins; IAM authentication supplies the login",
    "oauth_scope": "is for OAuth logins; IAM authentication supplies the login",
}
# Settings that may still come from the environment: they decide nothing about where bytes go
# or how they are protected. Every other libpq setting is given explicitly (see libpq_settings).
FROM_ENVIRONMENT = frozenset({"application_name", "client_encoding", "options", "sslcompression"})
# psycopg's own connect() keywords (not libpq settings).
PSYCOPG_KEYWORDS = frozenset(
    {"autocommit", "prepare_threshold", "context", "row_factory", "cursor_factory"}
)

# libpq reports a refused login as text only (no SQLSTATE before the session exists): "FATAL:
# password authentication failed for user ..." (PAM, for RDS) or "... access denied" (DSQL).
# The server's whole message is kept (DOTALL): the dialer shows it on one line, escaped.
_REFUSED_LOGIN = re.compile(
    r"FATAL:\s+(.*(?:authentication failed|access denied).*)", re.IGNORECASE | re.DOTALL
)
_THROTTLED = re.compile(
    rf"FATAL:\s+(.*(?:{'|'.join(map(re.escape, THROTTLED_TEXTS))}).*)", re.IGNORECASE | re.DOTALL
)
_NO_TLS = "server does not support SSL"


def vet(target: Target, driver_kwargs: Mapping[str, Any], *, pool: bool) -> Vetted:
    """libpq and psycopg settings of each connection (a pool's from its ``kwargs=``); pool
    options for psycopg_pool. Refused: what iampool sets, what writes or moves bytes elsewhere,
    and libpq settings this libpq does not know."""
    if pool:
        extra = driver_kwargs.get("kwargs") or {}
        if not isinstance(extra, dict):
            raise ConfigError(
                ConfigProblem("kwargs", "must be a dict of connection settings: iampool supplies "
                                        "the callable that adds each connection's token"),
                context="driver keyword",
            )  # fmt: skip
        pool_options = {k: v for k, v in driver_kwargs.items() if k != "kwargs"}
        for name in ("conninfo", "open"):
            if name in pool_options:
                raise ConfigError(
                    ConfigProblem(name, "is set by iampool from the DSN and aws_iam"),
                    context="driver keyword",
                )
        connection = dict(extra)
    else:
        pool_options, connection = {}, dict(driver_kwargs)
    _check_libpq(target.options, "DSN")
    _check_libpq(connection, "driver keyword")
    return Vetted({**target.options, **connection}, pool_options)


_WEAK_TLS = ("tlsv1", "tlsv1.1")  # below RDS's own floor (TLS 1.2)


def _check_libpq(settings: Mapping[str, Any], context: str) -> None:
    known = _libpq_defaults()
    problems = []
    for name, value in settings.items():
        if name in ("ssl_min_protocol_version", "ssl_max_protocol_version") and (
            str(value).strip().lower() in _WEAK_TLS
        ):
            problems.append(
                ConfigProblem(name, "below TLSv1.2 would let a token travel over a TLS version "
                                    "RDS itself no longer accepts; leave it unset or use TLSv1.3")
            )  # fmt: skip
        elif name in OWNED:
            problems.append(ConfigProblem(name, "is set by iampool from the DSN and aws_iam"))
        elif name in REFUSED:
            problems.append(ConfigProblem(name, REFUSED[name]))
        elif name not in known and name not in PSYCOPG_KEYWORDS:
            problems.append(
                ConfigProblem(name, "is not a setting of the installed libpq or psycopg")
            )
    if problems:
        raise ConfigError(problems, context=context)


# Values for settings without a compiled-in default, where an empty one is invalid: libpq's
# run-time defaults, and for require_auth what an IAM login is (a password, sent in clear over
# TLS: RDS's PAM and DSQL both ask for exactly that; anything else is not the server we want).
_RUNTIME_DEFAULTS = {
    "sslcertmode": "allow",
    "min_protocol_version": "3.0",
    "max_protocol_version": "3.0",
    "require_auth": "password",
}


# Settings never pinned: an empty value is invalid for them and they decide nothing of where
# bytes go or how they are protected (TCP keepalives, SCRAM keys for a SCRAM login).
_NOT_PINNED = frozenset(
    {
        "keepalives", "keepalives_count", "keepalives_idle", "keepalives_interval",
        "scram_client_key", "scram_server_key", "service", "tcp_user_timeout",
    }
)  # fmt: skip


@functools.cache
def _libpq_defaults() -> dict[str, str | None]:
    """Every setting of the installed libpq, with the value to pin it to (its compiled-in
    default, else its run-time one, else ""), or None for one never pinned. Pinned settings
    come neither from the environment nor from a service file (``PGSERVICE``): libpq applies
    those only to settings a connection leaves out."""
    import psycopg

    defaults: dict[str, str | None] = {}
    for option in psycopg.pq.Conninfo.get_defaults():
        name = option.keyword.decode()
        if name in _NOT_PINNED or name in FROM_ENVIRONMENT:
            defaults[name] = None
        elif option.compiled is not None:
            defaults[name] = option.compiled.decode()
        else:
            defaults[name] = _RUNTIME_DEFAULTS.get(name, "")
    return defaults


def libpq_settings(plan: Plan) -> dict[str, Any]:
    """What every connection of the plan gives libpq, but the password and ``iam_host``'s
    addresses: pinned defaults, then the caller's settings, then iampool's."""
    target = plan.target
    pinned = {name: value for name, value in _libpq_defaults().items() if value is not None}
    settings: dict[str, Any] = {
        **pinned,
        **plan.settings.connection,
        "host": target.host,
        "hostaddr": "",  # an explicit empty value: PGHOSTADDR is not read
        "port": str(target.port),
        "user": target.user,
        **plan.tls.libpq,
        # An encrypted GSSAPI session would stand in for TLS; RDS and DSQL speak TLS only.
        "gssencmode": "disable",
        # libpq's own bound (whole seconds, 2 at least) backs up the dialer's.
        "connect_timeout": str(max(2, math.ceil(plan.login_timeout))),
    }
    if target.database is not None:
        settings["dbname"] = target.database
    return settings


def classify(exc: BaseException) -> Refusal | None:
    """A login refusal in a psycopg error (libpq reports it as text)."""
    import psycopg

    if not isinstance(exc, psycopg.OperationalError):
        return None
    text = str(exc)
    found = _THROTTLED.search(text) or _REFUSED_LOGIN.search(text)
    if found is None:
        return None
    return pg_refusal("28P01" if found.re is _REFUSED_LOGIN else None, found.group(1).strip())


async def _attempt(
    plan: Plan, base: type[AsyncConnection[Any]], settings: dict[str, Any], login: Any
) -> Any:
    """One login; errors come back without libpq's connection object (which holds the
    password), a server without TLS as :class:`~iampool.TlsNotOfferedError`."""
    import psycopg

    credentials: DbCredentials = login
    params: dict[str, Any] = {
        **settings,
        **await libpq_server_name(plan.target),  # iam_host: dial host, verify TLS for the name
        "user": credentials.user,  # a rotated secret may name another user
        "password": credentials.password,
    }
    try:
        return await base.connect(**params)
    except psycopg.Error as exc:
        error: psycopg.Error = exc
    # Raised outside the except block, so not even __context__ leads back to the original.
    if _NO_TLS in str(error):
        raise tls_not_offered(plan.target.endpoint)
    raise type(error)(*error.args)


def _iam_connection_class(base: type[C], plan: Plan, failed: Any = None) -> type[C]:
    """``base`` whose ``connect`` logs in through the plan's dialer (what psycopg_pool calls
    for each new connection) and reports failures to ``failed``."""
    settings = libpq_settings(plan)

    class IamConnection(base):  # type: ignore[valid-type,misc]
        @classmethod
        async def connect(cls, conninfo: str = "", **kwargs: Any) -> Any:
            try:
                return await plan.dialer.dial(lambda login: _attempt(plan, base, settings, login))
            except Exception as exc:
                if failed is not None:
                    failed(exc)
                raise

    IamConnection.__qualname__ = IamConnection.__name__ = f"Iam{base.__name__}"
    return IamConnection


async def connect(plan: Plan) -> AsyncConnection[TupleRow]:
    """One ``psycopg.AsyncConnection``."""
    import psycopg

    settings = libpq_settings(plan)
    connection: AsyncConnection[TupleRow] = await plan.dialer.dial(
        lambda login: _attempt(plan, psycopg.AsyncConnection, settings, login)
    )
    return connection


async def create_pool(plan: Plan) -> AsyncConnectionPool[AsyncConnection[TupleRow]]:
    """An open ``psycopg_pool.AsyncConnectionPool`` holding ``min_size`` connections.

    Like ``asyncpg.create_pool``, the first failure while filling the pool (a refused token, a
    server without TLS, a login timeout, ...) closes the pool and is raised.
    """
    import psycopg
    from psycopg_pool import AsyncConnectionPool

    options = dict(plan.settings.pool)
    loop = asyncio.get_running_loop()
    first_failure: asyncio.Future[BaseException] = loop.create_future()

    def failed(exc: BaseException) -> None:
        if not first_failure.done():
            first_failure.set_result(exc)

    connection_class = _iam_connection_class(
        options.pop("connection_class", psycopg.AsyncConnection), plan, failed
    )
    if plan.max_lifetime is not None:  # Aurora DSQL: psycopg_pool's 3,600 s is the server's cut
        options.setdefault("max_lifetime", plan.max_lifetime)
    pool: AsyncConnectionPool[AsyncConnection[TupleRow]] = AsyncConnectionPool(
        connection_class=connection_class,
        min_size=plan.min_size,
        max_size=plan.max_size,
        open=False,
        **options,
    )
    await pool.open()
    try:
        if plan.min_size:
            await _filled(pool, first_failure)
    except BaseException:
        await pool.close()
        raise
    finally:
        first_failure.cancel()  # later failures are the pool's to retry, not create_pool's
    return pool


async def _filled(
    pool: AsyncConnectionPool[Any], first_failure: asyncio.Future[BaseException]
) -> None:
    """Wait until the pool holds ``min_size`` connections, or raise the first failure."""
    ready = asyncio.ensure_future(pool.wait(pool.timeout))
    either: set[asyncio.Future[Any]] = {ready, first_failure}
    try:
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not ready.done():
            ready.cancel()
            await asyncio.gather(ready, return_exceptions=True)
    if ready.done() and not ready.cancelled() and ready.exception() is None:
        return
    if first_failure.done():
        # The pool's worker carried this error through its own frames (which hold the settings,
        # password included) before giving up on it: raise it without them.
        raise detached(first_failure.result())
    ready.result()  # the pool's own PoolTimeout


async def close_pool(pool: AsyncConnectionPool[Any]) -> None:
    """``AsyncConnectionPool.close()``: waits (``timeout``, 5 s by default) for its workers."""
    await pool.close()
