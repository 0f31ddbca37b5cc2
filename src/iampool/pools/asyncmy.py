"""Aurora MySQL through asyncmy: asyncmy's own pool, with a ``password_creator``.

asyncmy consults ``password_creator`` (which may return an awaitable) before every connection
attempt, pool refills and ``ping(reconnect=True)`` included: each new connection gets a fresh
(cached) IAM token from there, after waiting for the endpoint's rate cap. The pool is
``asyncmy.Pool`` itself; its ``fill_free_pool``, where it opens connections, is wrapped on the
instance to retry once with a fresh token when the server refuses one (asyncmy's fast path for
idle connections stays untouched).

TLS: given an ``ssl`` context, asyncmy asks for TLS and starts the handshake whatever the server
advertises, before the handshake response that carries the credential, so a server without TLS
fails the handshake and never sees the token (RDS switches to ``mysql_clear_password``, which
asyncmy answers, only on that encrypted channel). Settings that would skip TLS or the endpoint
(``ssl`` off, ``unix_socket``, ``sock``, an option file, ``local_infile``) are refused by the
check aiomysql's module uses too, and a failed handshake with a server that does not offer TLS
is reported as :class:`~iampool.TlsNotOfferedError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from .._credentials import DbAuth
from ._connect import (
    ConnectRate,
    check_tls_settings,
    connect_rate_for,
    connect_with_retry,
    tls_not_offered,
)
from ._dsn import Target, tls_context
from .mysql import mysql_options, tls_failure

if TYPE_CHECKING:
    from asyncmy import Connection, Pool

__all__ = ["check_settings", "connect", "create_pool"]

T = TypeVar("T")

_ACCESS_DENIED = 1045
_CANNOT_CONNECT = 2003  # CR_CONN_HOST_ERROR: asyncmy's error for a failed socket or handshake
_CLIENT_SSL = 0x0800
_PROBE_TIMEOUT = 5.0
# What iampool sets; mysql_options refuses what would connect elsewhere (unix_socket, sock, an
# option file) or open the client to the server (local_infile), with the reason.
_OWNED_KWARGS = ("host", "port", "user", "password", "password_creator", "database", "db")


def _rejection(exc: BaseException) -> str | None:
    from asyncmy.errors import OperationalError

    if isinstance(exc, OperationalError) and exc.args and exc.args[0] == _ACCESS_DENIED:
        return str(exc.args[1]) if len(exc.args) > 1 else "access denied"
    return None


_POOL_OPTIONS = ("echo", "pool_recycle")  # asyncmy.Pool's own, the rest goes to connections


def check_settings(target: Target, driver_kwargs: Mapping[str, Any]) -> None:
    """Refuse DSN options and keyword arguments that would redirect or weaken a connection
    (called before any AWS call)."""
    connection_kwargs = {k: v for k, v in driver_kwargs.items() if k not in _POOL_OPTIONS}
    mysql_options(target, connection_kwargs, driver="asyncmy", owned=_OWNED_KWARGS)
    check_tls_settings(target, connection_kwargs.get("ssl"))


def _settings(
    target: Target, auth: DbAuth, rate: ConnectRate | None, driver_kwargs: dict[str, Any]
) -> dict[str, Any]:
    options = mysql_options(target, driver_kwargs, driver="asyncmy", owned=_OWNED_KWARGS)

    async def password_creator() -> str:
        if rate is not None:
            await rate.wait()
        return (await auth.credentials()).password

    return {
        **options,
        **driver_kwargs,
        "host": target.host,
        "port": target.port,
        "user": target.user,
        "database": target.database,
        "ssl": tls_context(target, driver_kwargs.get("ssl")),
        "password_creator": password_creator,
    }


async def _tls_checked(target: Target, connecting: Awaitable[T]) -> T:
    """Await a connect; a failed handshake with a server that offers no TLS becomes
    :class:`~iampool.TlsNotOfferedError`."""
    from asyncmy.errors import OperationalError

    try:
        return await connecting
    except OperationalError as exc:
        if not exc.args or exc.args[0] != _CANNOT_CONNECT or target.host is None:
            raise
        failure: OperationalError = exc
    # Decided out here, so that what is raised gets no __context__.
    if await _offers_tls(target.host, target.port) is False:
        raise tls_not_offered(f"MySQL server {target.endpoint}")
    raise tls_failure(failure, target.endpoint) or failure


async def _offers_tls(host: str, port: int) -> bool | None:
    """Whether the MySQL server at host:port advertises TLS in its greeting; None if unknown.

    Reads the greeting only, then hangs up: nothing is sent, no credential above all.
    """
    try:
        payload = await asyncio.wait_for(_greeting(host, port), _PROBE_TIMEOUT)
    except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
        return None
    if not payload or payload[0] != 10:  # an error packet, or not protocol 10
        return None
    version_end = payload.find(b"\0", 1)
    flags_at = version_end + 1 + 4 + 8 + 1  # thread id, auth data part 1, filler
    if version_end < 0 or len(payload) < flags_at + 2:
        return None
    return bool(int.from_bytes(payload[flags_at : flags_at + 2], "little") & _CLIENT_SSL)


async def _greeting(host: str, port: int) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        header = await reader.readexactly(4)
        return await reader.readexactly(int.from_bytes(header[:3], "little"))
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def _retrying(
    target: Target, auth: DbAuth, fill: Callable[[bool], Awaitable[None]]
) -> Callable[[bool], Coroutine[Any, Any, None]]:
    """asyncmy's ``Pool.fill_free_pool``, retried once with a fresh token on a refusal."""

    @functools.wraps(fill)
    async def fill_free_pool(override_min: bool = False) -> None:
        await connect_with_retry(
            auth,
            lambda: _tls_checked(target, fill(override_min)),
            _rejection,
            user=target.user or "",
            endpoint=target.endpoint,
        )

    return fill_free_pool


async def create_pool(
    target: Target,
    auth: DbAuth,
    *,
    min_size: int,
    max_size: int,
    connect_rate: float | None,
    **driver_kwargs: Any,
) -> Pool:
    """``asyncmy.Pool`` filled to ``min_size``; keyword arguments go to the pool (``echo``,
    ``pool_recycle``) and to each connection."""
    from asyncmy import Pool

    pool_options = {
        name: driver_kwargs.pop(name) for name in _POOL_OPTIONS if name in driver_kwargs
    }
    settings = _settings(
        target, auth, connect_rate_for(target.endpoint, connect_rate), driver_kwargs
    )
    pool = Pool(minsize=min_size, maxsize=max_size, **pool_options, **settings)
    pool.fill_free_pool = _retrying(target, auth, pool.fill_free_pool)  # type: ignore[method-assign,assignment]
    try:
        if min_size > 0:
            async with pool.cond:
                await pool.fill_free_pool(False)
    except BaseException:
        pool.terminate()
        await pool.wait_closed()
        raise
    return pool


async def connect(
    target: Target, auth: DbAuth, *, connect_rate: float | None = None, **driver_kwargs: Any
) -> Connection:
    """One ``asyncmy.Connection`` authenticated with an IAM token over TLS."""
    import asyncmy

    settings = _settings(
        target, auth, connect_rate_for(target.endpoint, connect_rate), driver_kwargs
    )

    async def attempt() -> Connection:
        connection: Connection = await asyncmy.connect(**settings)
        return connection

    return await connect_with_retry(
        auth,
        lambda: _tls_checked(target, attempt()),
        _rejection,
        user=target.user or "",
        endpoint=target.endpoint,
    )
