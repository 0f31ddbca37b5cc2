"""Aurora MySQL through aiomysql: IAM tokens over TLS with ``mysql_clear_password``.

aiomysql has no password callable and its pool opens connections with fixed keyword arguments,
so iampool opens each connection itself and keeps them in :class:`MySQLPool`, which offers
aiomysql's pool interface. aiomysql also stays on plain TCP when a server does not advertise
TLS and would then send the token in clear text: :class:`_IamConnection` refuses such a server
before any credential leaves the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl
from collections.abc import Awaitable, Callable, Generator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from .._credentials import DbAuth
from .._errors import ConfigError, ConfigProblem, TlsNotOfferedError
from ._connect import (
    ConnectRate,
    check_tls_settings,
    connect_rate_for,
    connect_with_retry,
    refuse_owned_kwargs,
    tls_not_offered,
)
from ._dsn import Target, tls_context
from ._slots import ConnectionSlots

if TYPE_CHECKING:
    from aiomysql.connection import Connection

__all__ = ["MySQLPool", "check_settings", "connect", "create_pool", "mysql_options", "tls_failure"]

log = logging.getLogger("iampool")

_ACCESS_DENIED = 1045
_CANNOT_CONNECT = 2003  # CR_CONN_HOST_ERROR: both drivers' error for a failed socket or handshake
_CLOSE_GRACE = 2.0  # seconds wait_closed() gives discarded connections to finish closing
_OWNED_KWARGS = ("host", "port", "user", "password", "db", "auth_plugin")


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
            await super()._request_authentication()

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


def _rejection(exc: BaseException) -> str | None:
    from pymysql.err import OperationalError

    if isinstance(exc, OperationalError) and exc.args and exc.args[0] == _ACCESS_DENIED:
        return str(exc.args[1]) if len(exc.args) > 1 else "access denied"
    return None


def check_settings(target: Target, driver_kwargs: Mapping[str, Any]) -> None:
    """Refuse DSN options and keyword arguments that would redirect or weaken a connection
    (called before any AWS call)."""
    mysql_options(target, driver_kwargs, driver="aiomysql", owned=_OWNED_KWARGS)
    check_tls_settings(target, driver_kwargs.get("ssl"))


def _settings(target: Target, driver_kwargs: dict[str, Any]) -> dict[str, Any]:
    options = mysql_options(target, driver_kwargs, driver="aiomysql", owned=_OWNED_KWARGS)
    return {
        **options,
        **driver_kwargs,
        "host": target.host,
        "port": target.port,
        "user": target.user,
        "db": target.database,
        "ssl": tls_context(target, driver_kwargs.get("ssl")),
        "auth_plugin": "mysql_clear_password",
    }


MySQLDriver = Literal["aiomysql", "asyncmy"]

# Settings of aiomysql and asyncmy that would send the token somewhere else than the endpoint it
# is signed for, or open the client up to the server: refused with the reason, from a DSN or a
# keyword argument alike. What stays allowed does neither: init_command and sql_mode run after
# the login, on the authenticated session; server_public_key only encrypts a password on
# connections without TLS, which iampool never opens; conv, cursor classes, echo, charset,
# program_name, timeouts and asyncmy's auth_plugin_map are the application's own business.
_REFUSED = {
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
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


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
        ConfigProblem(name, reason) for name, reason in _REFUSED.items() if name in driver_kwargs
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
    refuse_owned_kwargs(driver_kwargs, owned)
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
        if name in _REFUSED:
            problems.append(ConfigProblem(name, _REFUSED[name]))
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


async def _open(auth: DbAuth, settings: dict[str, Any], endpoint: str) -> Connection:
    credentials = await auth.credentials()
    connection = _connection_class()(password=credentials.password, **settings)
    try:
        await connection._connect()
    except Exception as exc:  # aiomysql wraps connect failures in OperationalError
        failure: BaseException = exc
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
    raise tls_failure(failure, endpoint) or failure


def _opener(
    target: Target, auth: DbAuth, rate: ConnectRate | None, driver_kwargs: dict[str, Any]
) -> Callable[[], Awaitable[Connection]]:
    settings = _settings(target, driver_kwargs)

    async def open_connection() -> Connection:
        return await connect_with_retry(
            auth,
            lambda: _open(auth, settings, target.endpoint),
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
    rate = connect_rate_for(target.endpoint, connect_rate)
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
    rate = connect_rate_for(target.endpoint, connect_rate)
    pool = MySQLPool(_opener(target, auth, rate, driver_kwargs), min_size, max_size, pool_recycle)
    await pool._slots.start()
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
