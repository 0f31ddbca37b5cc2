"""Redshift through redshift-connector, the official (synchronous) driver, from worker threads.

``RedshiftPool`` offers asyncpg's shape (``acquire()``, ``fetch``/``fetchrow``/``fetchval``/
``execute``, ``close()``). Every driver call runs in a worker thread through anyio, under a
capacity limiter sized to the pool, so threads never outnumber connections. redshift-connector
is given the temporary user and password and ``iam=False``: it makes no AWS call of its own.
"""

from __future__ import annotations

import contextlib
import functools
import io
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, TypeVar

import anyio

from .._credentials import DbAuth
from .._errors import ConfigError, ConfigProblem
from ._connect import (
    PG_AUTH_SQLSTATES,
    REDSHIFT_ADVICE,
    ConnectRate,
    connect_rate_for,
    connect_with_retry,
    refuse_owned_kwargs,
    tls_not_offered,
)
from ._dsn import Target
from ._slots import ConnectionSlots

__all__ = ["RedshiftConnection", "RedshiftPool", "connect", "create_pool"]

T = TypeVar("T")
# redshift-connector only knows verify-ca / verify-full; an unknown mode would skip TLS
# verification entirely, so "require" becomes verify-ca (what Superset uses for Redshift).
_SSLMODES = {"require": "verify-ca", "verify-ca": "verify-ca", "verify-full": "verify-full"}
_OWNED_KWARGS = ("host", "port", "user", "password", "database", "iam", "ssl", "sslmode")
_CONNECTION_ERRORS = frozenset({"InterfaceError", "OperationalError"})
_FATAL_SEVERITIES = frozenset({"FATAL", "PANIC"})


def _rejection(exc: BaseException) -> str | None:
    """The server's message when redshift-connector reports an authentication refusal."""
    detail = exc.args[0] if exc.args else None
    if isinstance(detail, dict) and detail.get("C") in PG_AUTH_SQLSTATES:
        return str(detail.get("M", "authentication failed"))
    return None


def _breaks_connection(exc: BaseException) -> bool:
    """Whether a driver error leaves its connection unusable (socket lost, fatal server error).

    SQL errors leave an autocommit connection usable; the server's message arrives as a dict.
    """
    detail = exc.args[0] if exc.args else None
    if isinstance(detail, dict):
        return detail.get("V", detail.get("S")) in _FATAL_SEVERITIES
    return type(exc).__name__ in _CONNECTION_ERRORS


class RedshiftConnection:
    """One redshift-connector connection with async methods; each call runs in a worker thread.

    Statements autocommit, as in asyncpg outside a transaction. ``raw`` is the driver's own
    connection for anything else (use it from a thread: ``anyio.to_thread.run_sync``).
    """

    def __init__(self, raw: Any, limiter: anyio.CapacityLimiter) -> None:
        self.raw = raw
        self._limiter = limiter
        self._closed = False
        self._broken = False

    async def execute(self, query: str, *args: Any) -> None:
        """Run a statement."""
        await self._run(self._query, query, args, None)

    async def fetch(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        """All rows of a query, as tuples."""
        rows: list[tuple[Any, ...]] = await self._run(self._query, query, args, "all")
        return rows

    async def fetchrow(self, query: str, *args: Any) -> tuple[Any, ...] | None:
        """The first row, or None."""
        row: tuple[Any, ...] | None = await self._run(self._query, query, args, "one")
        return row

    async def fetchval(self, query: str, *args: Any, column: int = 0) -> Any:
        """One value of the first row, or None."""
        row = await self.fetchrow(query, *args)
        return None if row is None else row[column]

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        try:
            return await anyio.to_thread.run_sync(
                functools.partial(function, *args), limiter=self._limiter
            )
        except Exception as exc:
            # Remembered even when the caller swallows the error, so a pool discards it.
            self._broken = self._broken or _breaks_connection(exc)
            raise

    def _query(self, query: str, args: tuple[Any, ...], fetch: str | None) -> Any:
        cursor = self.raw.cursor()
        try:
            cursor.execute(query, args or None)
            if fetch == "all":
                return [tuple(row) for row in cursor.fetchall()]
            if fetch == "one":
                row = cursor.fetchone()
                return None if row is None else tuple(row)
            return None
        finally:
            cursor.close()

    def is_closed(self) -> bool:
        """Whether it was closed or its connection was lost (a pool then discards it)."""
        return self._closed or self._broken

    def close(self) -> None:
        """Close the driver connection (blocking, quick). Safe to call twice.

        Never raises: redshift-connector raises ``InterfaceError`` when closing a connection
        that is already closed or broken, which would otherwise escape from a pool's release
        and cost the pool that connection's slot.
        """
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self.raw.close()


def _connect_closing_on_failure(connect: Callable[..., Any], **options: Any) -> Any:
    """``redshift_connector.connect`` that never leaves a socket open when it fails.

    The driver closes its socket on socket errors only: when the server refuses TLS or the
    login, the half-built connection keeps it open until garbage collection (a
    ``ResourceWarning``, and a server-side connection held meanwhile). Runs in a worker thread.
    """
    try:
        return connect(**options)
    except BaseException as exc:
        _close_half_built(exc)
        raise


def _close_half_built(exc: BaseException) -> None:
    """Close the sockets of the driver ``Connection`` whose ``__init__`` raised ``exc``.

    The only reference to it is the ``self`` of its ``__init__`` frame in the traceback. Its
    socket attributes are found by type, not by (private) name.
    """
    from redshift_connector.core import Connection

    traceback = exc.__traceback__
    while traceback is not None:
        half_built = traceback.tb_frame.f_locals.get("self")
        if isinstance(half_built, Connection):
            held = list(vars(half_built).values())
            # the buffered file over the socket first, then the socket itself
            for resource in [item for item in held if isinstance(item, io.IOBase)] + [
                item for item in held if isinstance(item, socket.socket)
            ]:
                with contextlib.suppress(OSError, ValueError):
                    resource.close()
            return
        traceback = traceback.tb_next


def _opener(
    target: Target,
    auth: DbAuth,
    limiter: anyio.CapacityLimiter,
    rate: ConnectRate | None,
    driver_kwargs: dict[str, Any],
) -> Callable[[], Awaitable[RedshiftConnection]]:
    import redshift_connector
    import redshift_connector.error

    refuse_owned_kwargs(driver_kwargs, _OWNED_KWARGS)
    if target.sslrootcert is not None:
        raise ConfigError(
            ConfigProblem("sslrootcert", "redshift-connector cannot take a CA file: it trusts "
                                         "the system store (SSL_CERT_FILE) and Amazon's CAs"),
            context="DSN",
        )  # fmt: skip
    sslmode = _SSLMODES[target.sslmode]

    async def attempt() -> RedshiftConnection:
        login = await auth.credentials()
        try:
            raw = await anyio.to_thread.run_sync(
                functools.partial(
                    _connect_closing_on_failure,
                    redshift_connector.connect,
                    host=login.host or target.host,
                    port=login.port or target.port,
                    database=login.database or target.database,
                    user=login.user,
                    password=login.password,
                    iam=False,
                    ssl=True,
                    sslmode=sslmode,
                    **driver_kwargs,
                ),
                limiter=limiter,
            )
        except redshift_connector.error.InterfaceError as exc:
            if "refuses SSL" in str(exc):  # it stops before sending the password
                raise tls_not_offered(target.endpoint) from None
            raise
        raw.autocommit = True
        return RedshiftConnection(raw, limiter)

    async def open_connection() -> RedshiftConnection:
        return await connect_with_retry(
            auth,
            attempt,
            _rejection,
            user=auth.config.db_username or auth.config.workgroup_name or "",
            endpoint=target.endpoint,
            rate=rate,
            advice=REDSHIFT_ADVICE,
        )

    return open_connection


class RedshiftPool:
    """An async pool of redshift-connector connections, each opened with IAM credentials."""

    def __init__(
        self,
        target: Target,
        auth: DbAuth,
        *,
        min_size: int,
        max_size: int,
        connect_rate: float | None = None,
        **driver_kwargs: Any,
    ) -> None:
        self._limiter = anyio.CapacityLimiter(1)
        rate = connect_rate_for(target.endpoint, connect_rate)
        self._slots: ConnectionSlots[RedshiftConnection] = ConnectionSlots(
            _opener(target, auth, self._limiter, rate, driver_kwargs),
            RedshiftConnection.close,
            min_size=min_size,
            max_size=max_size,
        )
        self._limiter.total_tokens = max_size  # checked by the slots

    def get_size(self) -> int:
        """Connections open or opening."""
        return self._slots.size

    def get_min_size(self) -> int:
        return self._slots.min_size

    def get_max_size(self) -> int:
        return self._slots.max_size

    def get_idle_size(self) -> int:
        return self._slots.idle

    async def fill(self) -> None:
        """Open connections until ``min_size`` exist."""
        await self._slots.fill()

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[RedshiftConnection]:
        """``async with pool.acquire() as conn``: a connection for the block's duration."""
        connection = await self._slots.acquire(lambda idle: not idle.is_closed())
        reuse = False
        try:
            yield connection
            reuse = True
        except Exception as exc:
            reuse = not _breaks_connection(exc)
            raise
        finally:
            self._slots.release(connection, reuse=reuse and not connection.is_closed())

    async def execute(self, query: str, *args: Any) -> None:
        """Run a statement on a pooled connection."""
        async with self.acquire() as connection:
            await connection.execute(query, *args)

    async def fetch(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        """All rows of a query on a pooled connection."""
        async with self.acquire() as connection:
            return await connection.fetch(query, *args)

    async def fetchrow(self, query: str, *args: Any) -> tuple[Any, ...] | None:
        """The first row of a query on a pooled connection."""
        async with self.acquire() as connection:
            return await connection.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: Any, column: int = 0) -> Any:
        """One value of the first row on a pooled connection."""
        async with self.acquire() as connection:
            return await connection.fetchval(query, *args, column=column)

    async def close(self) -> None:
        """Wait for acquired connections to come back, then close everything."""
        self._slots.close()
        await self._slots.wait_released()

    def terminate(self) -> None:
        """Close every connection now, in use or not."""
        self._slots.terminate()

    async def __aenter__(self) -> RedshiftPool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def create_pool(
    target: Target,
    auth: DbAuth,
    *,
    min_size: int,
    max_size: int,
    connect_rate: float | None,
    **driver_kwargs: Any,
) -> RedshiftPool:
    """A :class:`RedshiftPool` filled to ``min_size``."""
    pool = RedshiftPool(
        target,
        auth,
        min_size=min_size,
        max_size=max_size,
        connect_rate=connect_rate,
        **driver_kwargs,
    )
    await pool._slots.start()
    return pool


async def connect(
    target: Target, auth: DbAuth, *, connect_rate: float | None = None, **driver_kwargs: Any
) -> RedshiftConnection:
    """One :class:`RedshiftConnection` (it runs its calls in worker threads)."""
    limiter = anyio.CapacityLimiter(1)
    rate = connect_rate_for(target.endpoint, connect_rate)
    return await _opener(target, auth, limiter, rate, driver_kwargs)()
