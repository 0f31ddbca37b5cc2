"""Aurora MySQL through aiomysql: IAM tokens over TLS with ``mysql_clear_password``.

aiomysql has no password callable and its pool opens connections with fixed keyword arguments,
so iampool opens each connection itself and keeps them in :class:`MySQLPool`, which offers
aiomysql's pool interface. aiomysql also stays on plain TCP when a server does not advertise
TLS and would then send the token in clear text: :class:`_IamConnection` refuses such a server
before any credential leaves the process.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Generator
from types import TracebackType
from typing import Any

from aiomysql.connection import Connection
from pymysql.constants import CLIENT
from pymysql.err import OperationalError

from .._credentials import DbAuth
from .._errors import ConfigError, ConfigProblem, TlsNotOfferedError
from ._connect import ConnectRate, connect_rate_for, connect_with_retry
from ._dsn import Target, tls_context

__all__ = ["MySQLPool", "connect", "create_pool"]

log = logging.getLogger("iampool")

_ACCESS_DENIED = 1045
_OWNED_KWARGS = ("host", "port", "user", "password", "db", "auth_plugin", "unix_socket")


class _IamConnection(Connection):  # type: ignore[misc]
    """aiomysql's connection, refusing to authenticate unless the server offered TLS."""

    async def _request_authentication(self) -> None:
        if not self.server_capabilities & CLIENT.SSL:
            raise TlsNotOfferedError(
                f"MySQL server {self._host}:{self._port} did not offer TLS; iampool refused to "
                "send it an IAM token (RDS always offers TLS: check the endpoint and any proxy)"
            )
        await super()._request_authentication()


def _rejection(exc: BaseException) -> str | None:
    if isinstance(exc, OperationalError) and exc.args and exc.args[0] == _ACCESS_DENIED:
        return str(exc.args[1]) if len(exc.args) > 1 else "access denied"
    return None


def _settings(target: Target, driver_kwargs: dict[str, Any]) -> dict[str, Any]:
    owned = sorted(set(driver_kwargs) & set(_OWNED_KWARGS))
    if owned:
        raise ConfigError(
            [ConfigProblem(name, "is set by iampool from the DSN and aws_iam") for name in owned],
            context="driver keyword",
        )
    return {
        **driver_kwargs,
        "host": target.host,
        "port": target.port,
        "user": target.user,
        "db": target.database,
        "ssl": tls_context(target, driver_kwargs.get("ssl")),
        "auth_plugin": "mysql_clear_password",
    }


async def _open(auth: DbAuth, settings: dict[str, Any]) -> Connection:
    credentials = await auth.credentials()
    connection = _IamConnection(password=credentials.password, **settings)
    try:
        await connection._connect()
    except OperationalError as exc:
        if isinstance(exc.__cause__, TlsNotOfferedError):
            raise exc.__cause__ from None
        raise
    except BaseException:  # cancelled mid-handshake: aiomysql only cleans up after Exception
        connection.close()
        raise
    return connection


def _opener(
    target: Target, auth: DbAuth, rate: ConnectRate | None, driver_kwargs: dict[str, Any]
) -> Callable[[], Awaitable[Connection]]:
    settings = _settings(target, driver_kwargs)

    async def open_connection() -> Connection:
        return await connect_with_retry(
            auth,
            lambda: _open(auth, settings),
            _rejection,
            user=target.user or "",
            endpoint=target.endpoint,
            rate=rate,
        )

    return open_connection


async def connect(
    target: Target, auth: DbAuth, *, connect_rate: float | None = None, **driver_kwargs: Any
) -> Connection:
    """One aiomysql ``Connection`` authenticated with an IAM token over TLS."""
    rate = connect_rate_for(target.host or "", target.port, connect_rate)
    return await _opener(target, auth, rate, driver_kwargs)()


async def create_pool(
    target: Target,
    auth: DbAuth,
    *,
    min_size: int,
    max_size: int,
    connect_rate: float | None,
    pool_recycle: float = -1,
    **driver_kwargs: Any,
) -> MySQLPool:
    """A :class:`MySQLPool` filled to ``min_size``."""
    rate = connect_rate_for(target.host or "", target.port, connect_rate)
    pool = MySQLPool(_opener(target, auth, rate, driver_kwargs), min_size, max_size, pool_recycle)
    try:
        await pool.fill()
    except BaseException:
        pool.terminate()
        raise
    return pool


class MySQLPool:
    """A pool of aiomysql connections with aiomysql's interface, each opened with IAM credentials.

    ``acquire()`` (awaitable or ``async with``), ``release()``, ``close()`` + ``wait_closed()``,
    ``terminate()``, ``clear()``, ``size``/``freesize``/``minsize``/``maxsize``. Never more than
    ``maxsize`` connections exist, opening included; connections open concurrently, outside
    any lock, and a cancelled acquire never leaks a connection or a slot.
    """

    def __init__(
        self,
        open_connection: Callable[[], Awaitable[Connection]],
        minsize: int,
        maxsize: int,
        pool_recycle: float = -1,
    ) -> None:
        if minsize < 0 or maxsize < 1 or minsize > maxsize:
            raise ValueError(f"need 0 <= min_size <= max_size >= 1, got {minsize}, {maxsize}")
        self._open_connection = open_connection
        self._minsize = minsize
        self._maxsize = maxsize
        self._recycle = pool_recycle
        self._free: deque[Connection] = deque()
        self._used: set[Connection] = set()
        self._opening = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closing = False
        self._closed = False
        self._all_released: asyncio.Event | None = None

    minsize = property(lambda self: self._minsize, doc="Connections kept open when idle.")
    maxsize = property(lambda self: self._maxsize, doc="Most connections ever open at once.")

    @property
    def size(self) -> int:
        """Connections open or opening."""
        return len(self._free) + len(self._used) + self._opening

    @property
    def freesize(self) -> int:
        """Idle connections ready to be acquired."""
        return len(self._free)

    @property
    def closed(self) -> bool:
        """True once ``wait_closed()`` finished."""
        return self._closed

    async def fill(self) -> None:
        """Open connections until ``minsize`` exist."""
        while self.size < self._minsize:
            self._opening += 1
            try:
                connection = await self._open_connection()
            finally:
                self._opening -= 1
            self._free.append(connection)

    def acquire(self) -> _Acquire:
        """A connection: ``await pool.acquire()`` or ``async with pool.acquire() as conn``."""
        return _Acquire(self)

    async def _acquire(self) -> Connection:
        while True:
            if self._closing:
                raise RuntimeError("Cannot acquire connection after closing pool")
            connection = self._take_free()
            if connection is not None:
                return connection
            if self.size < self._maxsize:
                self._opening += 1
                try:
                    connection = await self._open_connection()
                except BaseException:
                    self._opening -= 1
                    self._wake_one()  # the failed open's slot goes to a waiter
                    raise
                # No await between here and return: cancellation cannot lose the connection.
                self._opening -= 1
                self._used.add(connection)
                return connection
            await self._wait_for_slot()

    def _take_free(self) -> Connection | None:
        loop = asyncio.get_running_loop()
        while self._free:
            connection = self._free.pop()  # most recently used first: keep a warm core
            stale = self._recycle > -1 and loop.time() - connection.last_usage > self._recycle
            if connection.closed or stale:
                connection.close()
                continue
            self._used.add(connection)
            return connection
        return None

    async def _wait_for_slot(self) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._wake_one()  # we were woken but leave: pass the turn on
            else:
                self._waiters.remove(waiter)
            raise

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def release(self, conn: Connection) -> asyncio.Future[None]:
        """Return a connection. Not a coroutine; returns a done future for aiomysql parity."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        if conn not in self._used:
            return done
        self._used.discard(conn)
        if not conn.closed and conn.get_transaction_status():
            log.warning("connection released inside a transaction; closing it")
            conn.close()
        elif self._closing:
            conn.close()
        elif not conn.closed:
            self._free.append(conn)
        self._wake_one()
        if self._closing and not self._used and self._all_released is not None:
            self._all_released.set()
        return done

    async def clear(self) -> None:
        """Close every idle connection."""
        while self._free:
            self._free.pop().close()

    def close(self) -> None:
        """Stop handing out connections and close the idle ones; see ``wait_closed()``."""
        self._closing = True
        while self._free:
            self._free.pop().close()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)  # they will see the pool closing and raise

    def terminate(self) -> None:
        """Close the pool and every connection, in use or not."""
        self.close()
        for connection in list(self._used):
            connection.close()
        self._used.clear()
        self._closed = True

    async def wait_closed(self) -> None:
        """Wait until every acquired connection was released (and closed)."""
        if not self._closing:
            raise RuntimeError("wait_closed() called before close()")
        if self._used:
            self._all_released = asyncio.Event()
            await self._all_released.wait()
        self._closed = True

    async def __aenter__(self) -> MySQLPool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
        await self.wait_closed()


class _Acquire:
    __slots__ = ("_connection", "_pool")

    def __init__(self, pool: MySQLPool) -> None:
        self._pool = pool
        self._connection: Connection | None = None

    def __await__(self) -> Generator[Any, None, Connection]:
        return self._pool._acquire().__await__()

    async def __aenter__(self) -> Connection:
        self._connection = await self._pool._acquire()
        return self._connection

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            self._pool.release(connection)
