"""redshift-connector adapter: the official (synchronous) driver, driven from worker threads.

``RedshiftPool`` offers asyncpg's shape (``acquire()``, ``fetch``/``fetchrow``/``fetchval``/
``execute``, ``close()``). Every driver call runs in a worker thread, at most ``max_size`` of
them, so threads never outnumber connections: under asyncio the pool's own threads
(:class:`_DriverThreads`), under trio anyio's, through a capacity limiter. redshift-connector is
given the temporary user and password and ``iam=False``: it makes no AWS call of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import queue
import socket
import threading
import weakref
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, TypeVar

import anyio

from .._credentials import DbCredentials
from .._errors import ConfigError, ConfigProblem
from ._dialer import Refusal, pg_refusal, tls_not_offered
from ._dsn import Target
from ._plan import Plan, Vetted, refuse_owned, refuse_unvetted
from ._slots import ConnectionSlots
from ._tls import TlsStyle

__all__ = [
    "TLS_STYLE",
    "RedshiftConnection",
    "RedshiftPool",
    "classify",
    "close_pool",
    "connect",
    "create_pool",
    "vet",
]

T = TypeVar("T")

TLS_STYLE: TlsStyle = "redshift"

OWNED = ("host", "port", "user", "password", "database", "iam", "ssl", "sslmode")
# redshift-connector's own IAM and identity-provider logins: iampool does the IAM part from the
# aws_iam block (auto_create, db_groups, role_arn, ... are fields there), and with iam=False
# the driver ignores them; refused so that nobody believes they apply.
_OWN_IAM = (
    "access_key_id", "allow_db_user_override", "app_id", "app_name", "auth_profile",
    "auto_create", "client_id", "client_secret", "cluster_identifier", "credentials_provider",
    "db_groups", "db_user", "endpoint_url", "force_lowercase", "group_federation",
    "iam_disable_cache",
    "idc_client_display_name", "idc_region", "identity_namespace", "idp_host", "idp_partition",
    "idp_response_timeout", "idp_tenant", "is_serverless", "issuer_url", "listen_port",
    "login_to_rp", "login_url", "partner_sp_id", "preferred_role", "principal_arn", "profile",
    "provider_name", "region", "role_arn", "role_session_name", "scope", "secret_access_key",
    "serverless_acct_id", "serverless_work_group", "session_token", "token", "token_type",
    "web_identity_token",
)  # fmt: skip
REFUSED = {
    "unix_sock": "connects to a local socket instead of the endpoint the password was minted for",
    "ssl_insecure": "turns off the verification of the server's certificate",
    **dict.fromkeys(
        _OWN_IAM,
        "belongs to redshift-connector's own IAM login; iampool logs in from the aws_iam block "
        "(which has auto_create, db_groups, role_arn, ...)",
    ),
}
# Settings that change nothing of where the login goes or how it is protected.
ALLOWED = frozenset(
    {
        "application_name", "client_protocol_version", "database_metadata_current_db_only",
        "enable_table_types", "max_prepared_statements", "numeric_to_float", "source_address",
        "tcp_keepalive", "tcp_keepalive_count", "tcp_keepalive_idle", "tcp_keepalive_interval",
        "timeout",
    }
)  # fmt: skip
_CONNECTION_ERRORS = frozenset({"InterfaceError", "OperationalError"})
_FATAL_SEVERITIES = frozenset({"FATAL", "PANIC"})


def classify(exc: BaseException) -> Refusal | None:
    """A login refusal in a redshift-connector error (the server's fields as a dict)."""
    detail = exc.args[0] if exc.args else None
    if not isinstance(detail, dict):
        return None
    return pg_refusal(detail.get("C"), str(detail.get("M", "authentication failed")))


def _breaks_connection(exc: BaseException) -> bool:
    """Whether a driver error leaves its connection unusable (socket lost, fatal server error).

    SQL errors leave an autocommit connection usable; the server's message arrives as a dict.
    """
    detail = exc.args[0] if exc.args else None
    if isinstance(detail, dict):
        return detail.get("V", detail.get("S")) in _FATAL_SEVERITIES
    return type(exc).__name__ in _CONNECTION_ERRORS


_Job = tuple[
    Callable[[], Any],
    asyncio.AbstractEventLoop,
    "asyncio.Future[Any]",
    "Callable[[Any], None] | None",
]


class _DriverThreads:
    """Where one pool's blocking driver calls run: at most ``size`` threads, never more.

    Under asyncio the pool has threads of its own, one more for each connection it opens until
    there are ``size``, all waiting on one queue: a call is one queue put, and its answer one
    ``call_soon_threadsafe``. (``anyio.to_thread`` adds two event-loop passes, a cancel scope
    and a limiter to every call; ``asyncio.to_thread`` a shared executor's locks and futures.)
    A cancelled caller stops waiting at once; its call finishes in its thread, which stays
    counted until then. Under any other event loop (trio) calls go through anyio's worker
    threads, under a capacity limiter of ``size``.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._limiter: anyio.CapacityLimiter | None = None  # made on first use, under trio
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._stopped = False
        self._lock = threading.Lock()  # guards what the threads touch: _running, _exit_waiters
        self._running = 0
        self._exit_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    async def run(
        self,
        function: Callable[[], T],
        *,
        connects: bool = False,
        discard: Callable[[T], None] | None = None,
    ) -> T:
        """``function()`` in a worker thread; its result or exception.

        ``connects``: the call opens a connection, so the pool may need one more thread.
        ``discard``: what to do with the result when the caller was cancelled and nobody
        will receive it (close a connection that was opened for nobody).
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not asyncio: trio. anyio waits for the thread when its caller
            # is cancelled and returns the result; the cancellation comes at the next await.
            if self._limiter is None:
                self._limiter = anyio.CapacityLimiter(self._size)
            return await anyio.to_thread.run_sync(function, limiter=self._limiter)
        if self._stopped:
            raise RuntimeError("the pool's driver threads were stopped")
        if (connects or not self._threads) and len(self._threads) < self._size:
            self._start_thread()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((function, loop, future, discard))
        return await future

    def _start_thread(self) -> None:
        thread = threading.Thread(
            target=self._serve, name=f"iampool-redshift-{len(self._threads)}", daemon=True
        )
        with self._lock:
            self._running += 1
        try:
            thread.start()
        except BaseException:
            with self._lock:
                self._running -= 1
            raise
        self._threads.append(thread)

    def _serve(self) -> None:
        try:
            while (job := self._jobs.get()) is not None:
                function, loop, future, discard = job
                try:
                    outcome: tuple[Any, BaseException | None] = (function(), None)
                except BaseException as exc:  # handed to the caller, whatever it is
                    outcome = (None, exc)
                del job, function  # the driver call's frame and arguments, not kept till the next
                try:
                    loop.call_soon_threadsafe(_settle, future, *outcome, discard)
                except RuntimeError:  # the loop is closed: nobody will receive it
                    if discard is not None and outcome[1] is None:
                        discard(outcome[0])
                del future, outcome, discard
        finally:
            with self._lock:
                self._running -= 1
                waiters = self._exit_waiters if self._running == 0 else []
            for loop, exited in waiters:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_settle, exited, None, None, None)

    def stop(self) -> None:
        """Let every thread exit once the calls queued before this one are done."""
        if self._stopped:
            return
        self._stopped = True
        for _ in self._threads:
            self._jobs.put(None)

    async def aclose(self) -> None:
        """``stop()``, then wait until every thread has exited (its last call included)."""
        self.stop()
        if not self._threads:  # none under trio
            return
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._running:
                self._exit_waiters.append((loop, exited))
            else:
                exited.set_result(None)
        await exited
        for thread in self._threads:
            thread.join()  # past its last statement: only the interpreter's cleanup is left


def _settle(
    future: asyncio.Future[Any],
    result: Any,
    error: BaseException | None,
    discard: Callable[[Any], None] | None,
) -> None:
    if future.done():  # its caller was cancelled
        if discard is not None and error is None:
            discard(result)
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


class RedshiftConnection:
    """One redshift-connector connection with async methods; each call runs in a worker thread.

    Statements autocommit, as in asyncpg outside a transaction. ``raw`` is the driver's own
    connection for anything else (use it from a thread: ``anyio.to_thread.run_sync``).
    """

    def __init__(self, raw: Any, threads: _DriverThreads, *, owns_threads: bool = False) -> None:
        self.raw = raw
        self._threads = threads
        self._owns_threads = owns_threads
        self._closed = False
        self._broken = False
        # Held by the thread running a call: calls on one connection never overlap, and a
        # close() that arrives meanwhile (its caller was cancelled) is left to that thread.
        self._busy = threading.Lock()
        self._raw_closed = False
        # One cursor for the connection's life, as the driver's own Connection.run() keeps:
        # building a redshift-connector Cursor costs more CPU than a short query's round trip.
        self._cursor: Any = None
        if owns_threads:  # a connection dropped without close() stops its thread all the same
            weakref.finalize(self, threads.stop)

    async def execute(self, query: str, *args: Any) -> None:
        """Run a statement."""
        await self._run(query, args, None)

    async def fetch(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        """All rows of a query, as tuples."""
        rows: list[tuple[Any, ...]] = await self._run(query, args, "all")
        return rows

    async def fetchrow(self, query: str, *args: Any) -> tuple[Any, ...] | None:
        """The first row, or None."""
        row: tuple[Any, ...] | None = await self._run(query, args, "one")
        return row

    async def fetchval(self, query: str, *args: Any, column: int = 0) -> Any:
        """One value of the first row, or None."""
        row = await self._run(query, args, "one")
        return None if row is None else row[column]

    async def _run(self, query: str, args: tuple[Any, ...], fetch: str | None) -> Any:
        if self._closed:  # its threads may be gone: fail as the driver does on a closed one
            from redshift_connector.error import InterfaceError

            raise InterfaceError("connection is closed")
        try:
            return await self._threads.run(functools.partial(self._in_thread, query, args, fetch))
        except Exception as exc:
            # Remembered even when the caller swallows the error, so a pool discards it.
            self._broken = self._broken or _breaks_connection(exc)
            raise

    def _in_thread(self, query: str, args: tuple[Any, ...], fetch: str | None) -> Any:
        try:
            with self._busy:
                return self._query(query, args, fetch)
        finally:
            if self._closed:  # closed while this call ran: the close is this thread's to do
                self._close_raw()

    def _query(self, query: str, args: tuple[Any, ...], fetch: str | None) -> Any:
        cursor = self._cursor
        if cursor is None:
            cursor = self._cursor = self.raw.cursor()
        try:
            cursor.execute(query, args or None)
        except BaseException:
            self._cursor = None  # a fresh cursor after an error, whatever state it left
            raise
        if fetch == "all":
            return [tuple(row) for row in cursor.fetchall()]
        if fetch == "one":
            row = cursor.fetchone()
            if cursor.redshift_rowcount > 1:
                self._cursor = None  # drop the rows the caller did not ask for with it
            return None if row is None else tuple(row)
        if cursor.redshift_rowcount > 0 and cursor.description is not None:
            self._cursor = None  # same for a row-returning statement run by execute()
        return None

    def is_closed(self) -> bool:
        """Whether it was closed or its connection was lost (a pool then discards it)."""
        return self._closed or self._broken

    def close(self) -> None:
        """Close the driver connection (blocking, quick). Safe to call twice.

        Never raises: redshift-connector raises ``InterfaceError`` when closing a connection
        that is already closed or broken, which would otherwise escape from a pool's release
        and cost the pool that connection's slot. When a call whose caller was cancelled is
        still running in a worker thread, that thread closes the connection as it finishes.
        """
        if self._closed:
            return
        self._closed = True
        self._close_raw()
        if self._owns_threads:
            self._threads.stop()

    def _close_raw(self) -> None:
        # Whoever holds the connection closes it: this thread now, or the running call's
        # thread when it lets go (it checks _closed after releasing _busy).
        if not self._busy.acquire(blocking=False):
            return
        try:
            if not self._raw_closed:
                self._raw_closed = True
                self._cursor = None
                with contextlib.suppress(Exception):
                    self.raw.close()
        finally:
            self._busy.release()


def _close_quietly(raw: Any) -> None:
    """Close a driver connection that was opened for a caller who is gone."""
    with contextlib.suppress(Exception):
        raw.close()


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


def vet(target: Target, driver_kwargs: Mapping[str, Any], *, pool: bool) -> Vetted:
    """redshift-connector's settings (keywords only: a redshift:// DSN takes no options);
    refused: what iampool sets, a CA file (the driver cannot take one), a Unix socket,
    unverified TLS and the driver's own IAM logins."""
    refused = [ConfigProblem(name, REFUSED[name]) for name in driver_kwargs if name in REFUSED]
    if refused:
        raise ConfigError(refused, context="driver keyword")
    refuse_owned(driver_kwargs, OWNED)
    refuse_unvetted(driver_kwargs, ALLOWED, "redshift-connector", "driver keyword")
    if target.sslrootcert is not None:
        raise ConfigError(
            ConfigProblem("sslrootcert", "redshift-connector cannot take a CA file: it trusts "
                                         "the system store (SSL_CERT_FILE) and Amazon's CAs"),
            context="DSN",
        )  # fmt: skip
    return Vetted(dict(driver_kwargs))


def _opener(
    plan: Plan, threads: _DriverThreads, *, owns_threads: bool = False
) -> Callable[[], Awaitable[RedshiftConnection]]:
    import redshift_connector
    import redshift_connector.error

    target = plan.target
    settings = dict(plan.settings.connection)
    # The socket's timeout: the login bound while logging in (so a silent server cannot keep a
    # worker thread), then what the caller asked for (none by default) for the queries.
    query_timeout = settings.pop("timeout", None)

    async def attempt(login: Any) -> RedshiftConnection:
        credentials: DbCredentials = login
        try:
            raw = await threads.run(
                functools.partial(
                    _connect_closing_on_failure,
                    redshift_connector.connect,
                    host=credentials.host or target.host,
                    port=credentials.port or target.port,
                    database=credentials.database or target.database,
                    user=credentials.user,
                    password=credentials.password,
                    iam=False,
                    ssl=True,
                    sslmode=plan.tls.mode,
                    timeout=plan.login_timeout,
                    **settings,
                ),
                connects=True,
                discard=_close_quietly,
            )
        except redshift_connector.error.InterfaceError as exc:
            if "refuses SSL" in str(exc):  # it stops before sending the password
                raise tls_not_offered(target.endpoint) from None
            raise
        _set_socket_timeout(raw, query_timeout)
        raw.autocommit = True
        return RedshiftConnection(raw, threads, owns_threads=owns_threads)

    async def open_connection() -> RedshiftConnection:
        return await plan.dialer.dial(attempt)

    return open_connection


def _set_socket_timeout(raw: Any, timeout: float | None) -> None:
    """Give the sockets of a driver connection ``timeout`` (found by type, as in
    :func:`_close_half_built`: the driver keeps them in private attributes)."""
    for held in vars(raw).values():
        if isinstance(held, socket.socket):
            held.settimeout(timeout)


def _reusable(idle: RedshiftConnection) -> bool:
    return not idle.is_closed()


class _Lease:
    """What ``RedshiftPool.acquire()`` returns: takes a connection, gives it back on exit.

    A plain class rather than ``@asynccontextmanager``: it runs around every query.
    """

    __slots__ = ("_connection", "_slots")

    def __init__(self, slots: ConnectionSlots[RedshiftConnection]) -> None:
        self._slots = slots
        self._connection: RedshiftConnection | None = None

    async def __aenter__(self) -> RedshiftConnection:
        self._connection = await self._slots.acquire(_reusable)
        return self._connection

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        # Kept after success or a SQL error; not after a lost connection or a cancellation
        # (a cancelled call may still be running in its thread).
        reuse = exc is None or (isinstance(exc, Exception) and not _breaks_connection(exc))
        self._slots.release(connection, reuse=reuse and not connection.is_closed())


class RedshiftPool:
    """An async pool of redshift-connector connections, each opened with IAM credentials."""

    def __init__(self, plan: Plan) -> None:
        # The sizes are checked by the plan; the threads read theirs only when they start one.
        self._threads = _DriverThreads(plan.max_size)
        weakref.finalize(self, self._threads.stop)  # dropped without close(): threads exit
        self._slots: ConnectionSlots[RedshiftConnection] = ConnectionSlots(
            _opener(plan, self._threads),
            RedshiftConnection.close,
            min_size=plan.min_size,
            max_size=plan.max_size,
        )

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

    def acquire(self) -> AbstractAsyncContextManager[RedshiftConnection]:
        """``async with pool.acquire() as conn``: a connection for the block's duration."""
        return _Lease(self._slots)

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
        await self._threads.aclose()  # a call whose caller was cancelled may still be running

    def terminate(self) -> None:
        """Close every connection now, in use or not."""
        self._slots.terminate()
        self._threads.stop()

    async def __aenter__(self) -> RedshiftPool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def create_pool(plan: Plan) -> RedshiftPool:
    """A :class:`RedshiftPool` filled to ``min_size``."""
    pool = RedshiftPool(plan)
    try:
        await pool._slots.start()  # closes what it opened when filling fails
    except BaseException:
        pool.terminate()  # and the threads exit
        raise
    return pool


async def connect(plan: Plan) -> RedshiftConnection:
    """One :class:`RedshiftConnection` (it runs its calls in a worker thread of its own)."""
    threads = _DriverThreads(1)
    try:
        return await _opener(plan, threads, owns_threads=True)()
    except BaseException:
        threads.stop()
        raise


async def close_pool(pool: RedshiftPool) -> None:
    """``RedshiftPool.close()``."""
    await pool.close()
