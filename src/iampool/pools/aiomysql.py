"""aiomysql adapter: IAM tokens over TLS with ``mysql_clear_password``, in :class:`MySQLPool`.

aiomysql has no password callable and its pool opens connections with fixed keyword arguments,
so iampool opens each connection itself (through the plan's dialer) and keeps them in
:class:`MySQLPool`, which offers aiomysql's pool interface. aiomysql also stays on plain TCP
when a server does not advertise TLS and would then send the token in clear text:
:func:`_connection_class` refuses such a server before any credential leaves the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Generator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio

from .._credentials import DbCredentials
from .._errors import TlsNotOfferedError
from ._dialer import Refusal, tls_not_offered
from ._dsn import Target
from ._mysql import REFUSED, mysql_refusal, tls_failure, vet_mysql
from ._plan import Plan, Vetted
from ._slots import ConnectionSlots
from ._tls import TlsStyle

if TYPE_CHECKING:
    from aiomysql.connection import Connection

__all__ = [
    "REFUSED",
    "TLS_STYLE",
    "MySQLPool",
    "classify",
    "close_pool",
    "connect",
    "create_pool",
    "vet",
]

log = logging.getLogger("iampool")

TLS_STYLE: TlsStyle = "context"

_CLOSE_GRACE = 2.0  # seconds wait_closed() gives discarded connections to finish closing
OWNED = ("host", "port", "user", "password", "db", "auth_plugin")
_POOL_OPTIONS = ("pool_recycle",)  # MySQLPool's own; the rest goes to each connection


@functools.cache
def _connection_class() -> type[Connection]:
    """aiomysql's connection, refusing to authenticate unless the server offered TLS.

    Built on first use so that ``import iampool`` works without the ``mysql`` extra.
    """
    from aiomysql.connection import Connection
    from pymysql.constants import CLIENT

    class IamConnection(Connection):  # type: ignore[misc]
        _closing_writer: Any = None

        def close(self) -> None:
            """Close at once, as aiomysql does; ``wait_closed()`` waits for the TLS goodbye."""
            self._closing_writer = self._writer or self._closing_writer
            super().close()

        async def wait_closed(self) -> None:
            """Wait until the socket is really closed: over TLS, ``close()`` only starts the
            close_notify exchange, which needs the event loop to finish."""
            writer = self._closing_writer
            if writer is not None:
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

        async def _request_authentication(self) -> None:
            if not self.server_capabilities & CLIENT.SSL:
                raise tls_not_offered(f"MySQL server {self._host}:{self._port}")
            try:
                await super()._request_authentication()
            except BaseException:
                # aiomysql closes the (TLS) transport of a refused login without waiting:
                # kept, so that wait_closed() can.
                self._closing_writer = self._writer
                raise

        @property
        def closed(self) -> bool:
            """True once closed, also by the server (a restart, ``wait_timeout``).

            aiomysql's own pool checks its reader for EOF before handing out an idle
            connection; without that, the first query after a server restart fails with
            "Lost connection" once per idle connection.
            """
            reader = self._reader
            hung_up = reader is not None and (
                reader.at_eof() or reader.exception() is not None or reader.eof_received
            )
            return bool(super().closed or hung_up)

    return IamConnection


def vet(target: Target, driver_kwargs: Mapping[str, Any], *, pool: bool) -> Vetted:
    """aiomysql's settings from the DSN's options and the keywords; refused: what would redirect
    or weaken a connection (see ``_mysql``) and what iampool sets."""
    return vet_mysql(
        target, driver_kwargs, pool=pool, driver="aiomysql", owned=OWNED, pool_options=_POOL_OPTIONS
    )


def classify(exc: BaseException) -> Refusal | None:
    """A refused login in an aiomysql (PyMySQL) error."""
    from pymysql.err import OperationalError

    return mysql_refusal(exc, OperationalError)


async def _attempt(plan: Plan, settings: dict[str, Any], login: Any) -> Connection:
    credentials: DbCredentials = login
    # The login's user: a rotated secret may name another one (alternating users).
    connection = _connection_class()(
        password=credentials.password, **{**settings, "user": credentials.user}
    )
    try:
        await connection._connect()
    except Exception as exc:  # aiomysql wraps connect failures in OperationalError
        failure: BaseException = exc
        # A refused login's TLS goodbye, bounded: no half-closed transport outlives the attempt
        # (a loop that ends right after would report it unclosed).
        with anyio.move_on_after(_CLOSE_GRACE):
            await connection.wait_closed()
    except BaseException:  # cancelled mid-handshake: aiomysql only cleans up after Exception
        connection.close()
        raise
    else:
        return connection
    # Raised out here, so that the error gets no __context__: re-raising the TlsNotOfferedError
    # that aiomysql wrapped, inside the except clause, would chain the wrapper, whose __cause__
    # is that very error: a cycle.
    if isinstance(failure.__cause__, TlsNotOfferedError):
        raise failure.__cause__
    raise tls_failure(failure, plan.target.endpoint) or failure


def _settings(plan: Plan) -> dict[str, Any]:
    """What every connection of the plan gets, but the password."""
    target = plan.target
    return {
        **plan.settings.connection,
        "host": target.host,
        "port": target.port,
        "user": target.user,
        "db": target.database,
        "ssl": plan.tls.context,
        "auth_plugin": "mysql_clear_password",
        "connect_timeout": plan.login_timeout,  # aiomysql's own, for the TCP connect
    }


def _opener(plan: Plan) -> Callable[[], Awaitable[Connection]]:
    settings = _settings(plan)

    async def open_connection() -> Connection:
        return await plan.dialer.dial(lambda login: _attempt(plan, settings, login))

    return open_connection


async def connect(plan: Plan) -> Connection:
    """One aiomysql ``Connection`` authenticated with an IAM token over TLS."""
    return await _opener(plan)()


async def create_pool(plan: Plan) -> MySQLPool:
    """A :class:`MySQLPool` filled to ``min_size``."""
    recycle = plan.settings.pool.get("pool_recycle", -1)
    pool = MySQLPool(_opener(plan), plan.min_size, plan.max_size, recycle)
    await pool._slots.start()
    return pool


async def close_pool(pool: MySQLPool) -> None:
    """``close()``, then ``wait_closed()`` (aiomysql's way)."""
    pool.close()
    await pool.wait_closed()


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
        self._recycle = pool_recycle
        self._slots: ConnectionSlots[Connection] = ConnectionSlots(
            open_connection, self._discard, min_size=minsize, max_size=maxsize
        )
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    def _discard(self, connection: Connection) -> None:
        connection.close()
        try:
            task = asyncio.get_running_loop().create_task(connection.wait_closed())
        except RuntimeError:  # terminate() outside a loop: nothing left to wait on
            return
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    @property
    def minsize(self) -> int:
        """Connections kept open when idle."""
        return self._slots.min_size

    @property
    def maxsize(self) -> int:
        """Most connections ever open at once."""
        return self._slots.max_size

    @property
    def size(self) -> int:
        """Connections open or opening."""
        return self._slots.size

    @property
    def freesize(self) -> int:
        """Idle connections ready to be acquired."""
        return self._slots.idle

    @property
    def closed(self) -> bool:
        """True once the pool is closed and every connection came back."""
        return self._closed

    async def fill(self) -> None:
        """Open connections until ``minsize`` exist."""
        await self._slots.fill()

    def acquire(self) -> _Acquire:
        """A connection: ``await pool.acquire()`` or ``async with pool.acquire() as conn``."""
        return _Acquire(self)

    async def _acquire(self) -> Connection:
        return await self._slots.acquire(self._reusable)

    def _reusable(self, connection: Connection) -> bool:
        if connection.closed:
            return False
        loop = asyncio.get_running_loop()
        return self._recycle < 0 or loop.time() - connection.last_usage <= self._recycle

    def release(self, conn: Connection) -> asyncio.Future[None]:
        """Return a connection. Not a coroutine; returns a done future for aiomysql parity."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        in_transaction = not conn.closed and conn.get_transaction_status()
        if in_transaction:
            log.warning("connection released inside a transaction; closing it")
        self._slots.release(conn, reuse=not conn.closed and not in_transaction)
        return done

    async def clear(self) -> None:
        """Close every idle connection."""
        self._slots.discard_idle()

    def close(self) -> None:
        """Stop handing out connections and close the idle ones; see ``wait_closed()``."""
        self._slots.close()

    def terminate(self) -> None:
        """Close the pool and every connection, in use or not."""
        self._slots.terminate()
        self._closed = True

    async def wait_closed(self) -> None:
        """Wait until every acquired connection was released (and closed)."""
        if not self._slots.closing:
            raise RuntimeError("wait_closed() called before close()")
        await self._slots.wait_released()
        if self._closing:  # discarded connections finishing their TLS close_notify exchange
            await asyncio.wait(set(self._closing), timeout=_CLOSE_GRACE)
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
