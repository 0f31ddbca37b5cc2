"""asyncpg adapter: the real ``asyncpg.Pool``, whose ``connect=`` hook logs in through the dialer.

asyncpg gets host, port, user and database as keywords (what the plan validated), the plan's
``SSLContext``, and the DSN's other query options in a host-less DSN, read as asyncpg reads
them. Each attempt passes the password itself; asyncpg's own ``timeout`` is the plan's login
bound. libpq's environment variables asyncpg honours (``PGHOST``, ``PGPORT``, ``PGUSER``,
``PGDATABASE``, ``PGPASSWORD``, ``PGSSL*``, ``PGSSLNEGOTIATION``, ``PGTARGETSESSIONATTRS``) are
all overridden by explicit values.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from .._credentials import DbCredentials
from .._errors import ConfigError, ConfigProblem
from ._dialer import Refusal, pg_refusal, tls_not_offered
from ._dsn import Target
from ._plan import Plan, Vetted, refuse_owned, refuse_unvetted
from ._tls import TlsStyle

if TYPE_CHECKING:
    import asyncpg

__all__ = ["TLS_STYLE", "classify", "close_pool", "connect", "create_pool", "vet"]

TLS_STYLE: TlsStyle = "context"

# Keywords iampool sets from the DSN and aws_iam.
OWNED = ("dsn", "host", "port", "user", "password", "database")
# Keywords and DSN options that would read the endpoint or login from somewhere else.
REFUSED = {
    "passfile": "reads a password file; IAM authentication supplies the password",
    "service": "reads host, port and user from a service file instead of the DSN the IAM "
    "token is signed for",
    "servicefile": "reads host, port and user from a service file instead of the DSN the IAM "
    "token is signed for",
    "hostaddr": "would dial another address than the DSN's host, which TLS and the token "
    "are for; put the address in the DSN (or ?iam_host= for a tunnel)",
    "sslkeylogfile": "writes the TLS session keys, and so the token, to a file",
}


# Settings that change nothing of where the login goes or how it is protected.
ALLOWED = frozenset(
    {
        "command_timeout", "connection_class", "direct_tls", "gsslib", "krbsrvname", "loop",
        "max_cacheable_statement_size", "max_cached_statement_lifetime", "record_class",
        "server_settings", "ssl", "statement_cache_size", "target_session_attrs", "timeout",
    }
)  # fmt: skip
# asyncpg.create_pool's own.
POOL_OPTIONS = frozenset(
    {
        "connect",
        "init",
        "init_size",
        "max_inactive_connection_lifetime",
        "max_queries",
        "reset",
        "setup",
    }
)


def vet(target: Target, driver_kwargs: Mapping[str, Any], *, pool: bool) -> Vetted:
    """asyncpg's settings: the caller's keywords except those iampool sets; the pool's
    ``connect=`` hook kept apart (the dialer wraps it)."""
    for settings, context in ((target.options, "DSN"), (driver_kwargs, "driver keyword")):
        refused = [ConfigProblem(name, REFUSED[name]) for name in settings if name in REFUSED]
        if refused:
            raise ConfigError(refused, context=context)
    refuse_owned(driver_kwargs, OWNED)
    vetted = ALLOWED | POOL_OPTIONS if pool else ALLOWED
    refuse_unvetted(driver_kwargs, vetted, "asyncpg", "driver keyword")
    connection = {k: v for k, v in driver_kwargs.items() if k not in ("connect", "ssl")}
    hook = {"connect": driver_kwargs["connect"]} if pool and "connect" in driver_kwargs else {}
    return Vetted(connection, hook)


def classify(exc: BaseException) -> Refusal | None:
    """A login refusal in an asyncpg error (it carries the server's SQLSTATE)."""
    sqlstate = getattr(exc, "sqlstate", None)
    return pg_refusal(sqlstate, str(exc)) if sqlstate is not None else None


def _settings(plan: Plan) -> dict[str, Any]:
    """What every connection of the plan gets, but the password."""
    target = plan.target
    return {
        # What asyncpg would otherwise read from PGSSLNEGOTIATION and PGTARGETSESSIONATTRS.
        "direct_tls": False,
        "target_session_attrs": "any",
        **plan.settings.connection,
        # The DSN's other query options, for asyncpg to read as it reads them (asyncpg
        # settings, else server settings), in a DSN without host, port, user or database.
        "dsn": f"postgresql://?{urlencode(target.options)}" if target.options else None,
        "host": target.host,
        "port": target.port,
        "database": target.database,
        "user": target.user,
        "ssl": plan.tls.context,
        "timeout": plan.login_timeout,
    }


async def _attempt(
    plan: Plan, opener: Callable[..., Awaitable[Any]], settings: dict[str, Any], login: Any
) -> Any:
    """One login; a server that declines TLS said so before any password was sent."""
    credentials: DbCredentials = login
    try:
        # The login's user: a rotated secret may name another one (alternating users).
        return await opener(**{**settings, "user": credentials.user}, password=credentials.password)
    except ConnectionError as exc:
        if "rejected SSL upgrade" not in str(exc):
            raise
    raise tls_not_offered(plan.target.endpoint)


async def connect(plan: Plan) -> asyncpg.Connection:
    """One ``asyncpg.Connection``."""
    import asyncpg

    settings = _settings(plan)
    connection: asyncpg.Connection = await plan.dialer.dial(
        lambda login: _attempt(plan, asyncpg.connect, settings, login)
    )
    return connection


async def create_pool(plan: Plan) -> asyncpg.Pool:
    """An ``asyncpg.Pool`` whose every new connection logs in through the plan's dialer."""
    import asyncpg

    opener = plan.settings.pool.get("connect") or asyncpg.connect

    async def connect_hook(*args: Any, **kwargs: Any) -> asyncpg.Connection:
        # asyncpg's pool hands over its connect settings (and connection_class, record_class);
        # the password is each attempt's.
        def attempt(login: Any) -> Awaitable[Any]:
            return _attempt(plan, lambda **given: opener(*args, **given), kwargs, login)

        connection: asyncpg.Connection = await plan.dialer.dial(attempt)
        return connection

    pool: asyncpg.Pool = await asyncpg.create_pool(
        min_size=plan.min_size, max_size=plan.max_size, connect=connect_hook, **_settings(plan)
    )
    if plan.max_lifetime is not None:
        _expire_every(pool, plan.max_lifetime)
    return pool


def _expire_every(pool: asyncpg.Pool, seconds: float) -> None:
    """Every ``seconds``, asyncpg's own ``expire_connections()``: each connection open then is
    replaced at its next acquire (or closed at its next release), so none is handed out older
    than ``seconds`` (Aurora DSQL ends a session at one hour; asyncpg has no age limit). A
    timer, not a task: nothing is left running once the pool is closed (its last tick, at most
    ``seconds`` later, finds it closing and stops)."""
    loop = asyncio.get_running_loop()
    running: set[asyncio.Task[None]] = set()

    def expire() -> None:
        if pool.is_closing():
            return
        task = loop.create_task(pool.expire_connections())  # only moves a generation on
        running.add(task)
        task.add_done_callback(running.discard)
        loop.call_later(seconds, expire)

    loop.call_later(seconds, expire)


async def close_pool(pool: asyncpg.Pool) -> None:
    """``asyncpg.Pool.close()``: waits for acquired connections to come back."""
    await pool.close()
