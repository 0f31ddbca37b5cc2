"""PostgreSQL through psycopg 3: the real ``psycopg_pool.AsyncConnectionPool``.

psycopg_pool (3.3+) resolves an async ``kwargs`` callable at every new connection: that is where
each connection gets a fresh (cached) IAM token, so the pool is psycopg_pool's own, with its own
workers, health checks and reconnection. Connections are opened by a subclass of the pool's
``connection_class`` (``psycopg.AsyncConnection`` unless one is given) whose ``connect`` adds
what every iampool connect does: the per-endpoint rate cap, one retry with a fresh token when
the server refuses one, and a :class:`~iampool.TlsNotOfferedError` for a server without TLS
(libpq stops before sending a password then). libpq keeps the password in the connection object
it attaches to a failed attempt's error; iampool raises errors without it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from .._credentials import DbAuth
from .._errors import ConfigError, ConfigProblem
from ._connect import (
    ConnectRate,
    check_ca_file,
    connect_rate_for,
    connect_with_retry,
    detached,
    refuse_owned_kwargs,
    tls_not_offered,
)
from ._dsn import Target, libpq_server_name, libpq_tls

if TYPE_CHECKING:
    from psycopg import AsyncConnection
    from psycopg.rows import TupleRow
    from psycopg_pool import AsyncConnectionPool

__all__ = ["check_settings", "connect", "create_pool"]

C = TypeVar("C", bound="AsyncConnection[Any]")
T = TypeVar("T")

# libpq settings iampool decides from the DSN and aws_iam. An override could connect elsewhere
# than the token is signed for (host, hostaddr, port, service), log in otherwise (user,
# password, passfile), or weaken TLS (sslmode, sslrootcert, requiressl, gssencmode).
_OWNED = (
    "conninfo",
    "dbname",
    "gssencmode",
    "host",
    "hostaddr",
    "passfile",
    "password",
    "port",
    "requiressl",
    "service",
    "servicefile",
    "sslmode",
    "sslrootcert",
    "user",
)
# libpq reports a refused login as text only (no SQLSTATE before the session exists): "FATAL:
# password authentication failed for user ..." (PAM, for RDS) or "... access denied" (DSQL).
_REFUSED = re.compile(r"FATAL:\s+(.*(?:authentication failed|access denied).*)", re.IGNORECASE)
_NO_TLS = "server does not support SSL"


def _rejection(exc: BaseException) -> str | None:
    """The server's message when psycopg reports a refused login."""
    import psycopg

    if isinstance(exc, psycopg.OperationalError):
        found = _REFUSED.search(str(exc))
        if found:
            return found.group(1).strip()
    return None


async def _scrubbed(target: Target, connecting: Awaitable[T]) -> T:
    """Await a psycopg connect; its errors come back without libpq's connection object (which
    holds the password) and a server without TLS as :class:`~iampool.TlsNotOfferedError`."""
    import psycopg

    try:
        return await connecting
    except psycopg.Error as exc:
        error: psycopg.Error = exc
    # Raised outside the except block, so not even __context__ leads back to the original.
    if _NO_TLS in str(error):
        raise tls_not_offered(target.endpoint)
    raise type(error)(*error.args)


def check_settings(target: Target, driver_kwargs: Mapping[str, Any]) -> None:
    """Refuse settings iampool decides (in the keyword arguments of ``connect`` or in a pool's
    ``kwargs=``), a TLS mode libpq cannot verify and an unreadable CA file (called before any
    AWS call)."""
    refuse_owned_kwargs(driver_kwargs, ("conninfo", "open"))
    _connection_settings(target, None, {**driver_kwargs, **_pool_kwargs(driver_kwargs)})
    libpq_tls(target)
    if target.sslrootcert not in (None, "system"):  # libpq's word for the system trust store
        check_ca_file(target.sslrootcert)


def _pool_kwargs(driver_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """A pool's ``kwargs=``: the settings of each of its connections."""
    extra = driver_kwargs.get("kwargs") or {}
    if not isinstance(extra, dict):
        raise ConfigError(
            ConfigProblem("kwargs", "must be a dict of connection settings: iampool supplies "
                                    "the callable that adds each connection's token"),
            context="driver keyword",
        )  # fmt: skip
    return extra


def _connection_settings(
    target: Target, auth: DbAuth | None, extra: dict[str, Any]
) -> Callable[[], Awaitable[dict[str, Any]]]:
    """The ``kwargs`` callable: each call returns the settings of one new connection."""
    refuse_owned_kwargs(extra, _OWNED)
    options = dict(target.options)
    clashes = sorted(set(options) & set(_OWNED))
    if clashes:
        raise ConfigError(
            [ConfigProblem(name, "is set by iampool from the DSN and aws_iam") for name in clashes],
            context="DSN",
        )
    fixed: dict[str, Any] = {
        **options,
        **extra,
        "host": target.host,
        "port": target.port,
        "user": target.user,
        **libpq_tls(target),
        # An encrypted GSSAPI session would stand in for TLS; RDS and DSQL speak TLS only.
        "gssencmode": "disable",
    }
    if target.database is not None:
        fixed["dbname"] = target.database

    async def settings() -> dict[str, Any]:
        assert auth is not None  # None only when checking, which never calls this
        return {
            **fixed,
            **await libpq_server_name(target),  # iam_host: dial host, verify TLS for the name
            "password": (await auth.credentials()).password,
        }

    return settings


def _iam_connection_class(
    base: type[C],
    target: Target,
    auth: DbAuth,
    settings: Callable[[], Awaitable[dict[str, Any]]],
    rate: ConnectRate | None,
    failed: Callable[[BaseException], None] | None = None,
) -> type[C]:
    """``base`` whose ``connect`` waits for the rate cap, retries once with a fresh token when
    the server refuses one, and reports failures to ``failed``."""

    class IamConnection(base):  # type: ignore[valid-type,misc]
        @classmethod
        async def connect(cls, conninfo: str = "", **kwargs: Any) -> Any:
            # The pool's settings for the first attempt, then fresh ones. Moved out of
            # ``kwargs``: this frame is in the traceback of what it raises, and error trackers
            # capture its locals; the password must not be among them.
            pending = [dict(kwargs)]
            kwargs.clear()

            async def attempt() -> Any:
                params = pending.pop() if pending else await settings()
                connecting = super(IamConnection, cls).connect(conninfo, **params)
                return await _scrubbed(target, connecting)

            try:
                return await connect_with_retry(
                    auth,
                    attempt,
                    _rejection,
                    user=target.user or "",
                    endpoint=target.endpoint,
                    rate=rate,
                )
            except Exception as exc:
                if failed is not None:
                    failed(exc)
                raise

    IamConnection.__qualname__ = IamConnection.__name__ = f"Iam{base.__name__}"
    return IamConnection


async def create_pool(
    target: Target,
    auth: DbAuth,
    *,
    min_size: int,
    max_size: int,
    connect_rate: float | None,
    **driver_kwargs: Any,
) -> AsyncConnectionPool[AsyncConnection[TupleRow]]:
    """An open ``psycopg_pool.AsyncConnectionPool`` with ``min_size`` connections.

    Keyword arguments go to the pool; its ``kwargs=`` (a dict) to every connection. Like
    ``asyncpg.create_pool``, the first failure while filling the pool (a refused token, a
    server without TLS, ...) closes the pool and is raised.
    """
    import psycopg
    from psycopg_pool import AsyncConnectionPool

    refuse_owned_kwargs(driver_kwargs, ("conninfo", "open"))
    extra = _pool_kwargs(driver_kwargs)
    driver_kwargs.pop("kwargs", None)
    settings = _connection_settings(target, auth, extra)
    loop = asyncio.get_running_loop()
    first_failure: asyncio.Future[BaseException] = loop.create_future()

    def failed(exc: BaseException) -> None:
        if not first_failure.done():
            first_failure.set_result(exc)

    connection_class = _iam_connection_class(
        driver_kwargs.pop("connection_class", psycopg.AsyncConnection),
        target,
        auth,
        settings,
        connect_rate_for(target.endpoint, connect_rate),
        failed,
    )
    pool: AsyncConnectionPool[AsyncConnection[TupleRow]] = AsyncConnectionPool(
        kwargs=settings,
        connection_class=connection_class,
        min_size=min_size,
        max_size=max_size,
        open=False,
        **driver_kwargs,
    )
    await pool.open()
    try:
        if min_size:
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


async def connect(
    target: Target, auth: DbAuth, *, connect_rate: float | None = None, **driver_kwargs: Any
) -> AsyncConnection[TupleRow]:
    """One ``psycopg.AsyncConnection`` authenticated with an IAM token; keyword arguments are
    connection settings (``autocommit``, ``row_factory``, libpq parameters)."""
    import psycopg

    settings = _connection_settings(target, auth, driver_kwargs)
    connection_class = _iam_connection_class(
        psycopg.AsyncConnection,
        target,
        auth,
        settings,
        connect_rate_for(target.endpoint, connect_rate),
    )
    connection: AsyncConnection[TupleRow] = await connection_class.connect(**await settings())
    return connection
