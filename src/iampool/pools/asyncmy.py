"""Aurora MySQL through asyncmy: asyncmy's own pool, with a ``password_creator``.

asyncmy consults ``password_creator`` (which may return an awaitable) before every connection
attempt, pool refills and ``ping(reconnect=True)`` included: each new connection gets a fresh
(cached) IAM token from there, after waiting for the endpoint's rate cap (there, not in the
dialer: asyncmy runs its fill on every acquire, and most open no connection). The pool is
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
import contextvars
import functools
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from .._credentials import DbCredentials
from ._dialer import Refusal, login_paced, login_started, tls_not_offered
from ._dsn import Target
from ._mysql import REFUSED, mysql_refusal, tls_failure, vet_mysql
from ._plan import Plan, Vetted
from ._tls import TlsStyle

if TYPE_CHECKING:
    from asyncmy import Connection, Pool

__all__ = ["REFUSED", "TLS_STYLE", "classify", "close_pool", "connect", "create_pool", "vet"]

T = TypeVar("T")

TLS_STYLE: TlsStyle = "context"
# One attempt (a pool fill) opens as many connections as the pool lacks, maybe none: each says
# when it starts (login_started), for telemetry to count logins, not fills.
COUNTS_LOGINS = True

_CANNOT_CONNECT = 2003  # CR_CONN_HOST_ERROR: asyncmy's error for a failed socket or handshake
_CLIENT_SSL = 0x0800
_PROBE_TIMEOUT = 5.0
# What iampool sets; mysql_options refuses what would connect elsewhere (unix_socket, sock, an
# option file) or open the client to the server (local_infile), with the reason.
OWNED = ("host", "port", "user", "password", "password_creator", "database", "db")
_POOL_OPTIONS = ("echo", "pool_recycle")  # asyncmy.Pool's own, the rest goes to connections

# The credentials of the dialer's attempt under way in this task: asyncmy asks its
# password_creator for each connection it opens, and a pool fill may open several.
_attempt_login: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar(
    "iampool_asyncmy_login", default=None
)


def vet(target: Target, driver_kwargs: Mapping[str, Any], *, pool: bool) -> Vetted:
    """asyncmy's settings from the DSN's options and the keywords; refused: what would redirect
    or weaken a connection (see ``_mysql``) and what iampool sets."""
    return vet_mysql(
        target, driver_kwargs, pool=pool, driver="asyncmy", owned=OWNED, pool_options=_POOL_OPTIONS
    )


def classify(exc: BaseException) -> Refusal | None:
    """A refused login in an asyncmy error."""
    from asyncmy.errors import OperationalError

    return mysql_refusal(exc, OperationalError)


def _settings(plan: Plan) -> dict[str, Any]:
    target = plan.target
    dialer = plan.dialer

    async def password_creator() -> str:
        login = _attempt_login.get()
        if login is None:  # a reconnect (ping(reconnect=True)): a login of its own
            if dialer.rate is not None:
                await dialer.rate.wait()
            return (await dialer.auth.credentials()).password
        credentials: DbCredentials = login[0]
        login_started()  # telemetry: one login per connection the fill opens
        if dialer.rate is not None:  # here, not in the dialer: a fill may open no connection
            login_paced(await dialer.rate.wait())
        return credentials.password

    return {
        **plan.settings.connection,
        "host": target.host,
        "port": target.port,
        "user": target.user,
        "database": target.database,
        "ssl": plan.tls.context,
        "connect_timeout": plan.login_timeout,  # asyncmy's own, for the TCP connect
        "password_creator": password_creator,
    }


async def _logged_in(plan: Plan, login: Any, opening: Callable[[], Awaitable[T]]) -> T:
    """Run ``opening`` (asyncmy connects, which call password_creator) with this attempt's
    credentials; a failed handshake with a server without TLS says so."""
    token = _attempt_login.set([login])
    try:
        return await _tls_checked(plan.target, opening())
    finally:
        _attempt_login.reset(token)


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


async def connect(plan: Plan) -> Connection:
    """One ``asyncmy.Connection`` authenticated with an IAM token over TLS."""
    import asyncmy

    settings = _settings(plan)

    async def attempt(login: Any) -> Connection:
        credentials: DbCredentials = login
        # The login's user: a rotated secret may name another one (alternating users).
        login_settings = {**settings, "user": credentials.user}
        return await _logged_in(plan, login, lambda: asyncmy.connect(**login_settings))

    connection: Connection = await plan.dialer.dial(attempt)
    return connection


def _dialing(plan: Plan, pool: Pool) -> Callable[[bool], Coroutine[Any, Any, None]]:
    """asyncmy's ``Pool.fill_free_pool`` (where it opens connections) through the dialer."""
    fill: Callable[[bool], Awaitable[None]] = pool.fill_free_pool

    async def attempt(login: Any, override_min: bool) -> None:
        credentials: DbCredentials = login
        # The login's user (a rotated secret may name another one): the pool's connection
        # settings are read by each connect of the fill, which runs under the pool's lock.
        pool._conn_kwargs["user"] = credentials.user  # type: ignore[attr-defined]
        await _logged_in(plan, login, lambda: fill(override_min))

    @functools.wraps(fill)
    async def fill_free_pool(override_min: bool = False) -> None:
        await plan.dialer.dial(lambda login: attempt(login, override_min))

    return fill_free_pool


async def create_pool(plan: Plan) -> Pool:
    """``asyncmy.Pool`` filled to ``min_size``; ``echo`` and ``pool_recycle`` go to the pool,
    the other keyword arguments to each connection."""
    from asyncmy import Pool

    pool = Pool(
        minsize=plan.min_size, maxsize=plan.max_size, **plan.settings.pool, **_settings(plan)
    )
    pool.fill_free_pool = _dialing(plan, pool)  # type: ignore[method-assign,assignment]
    try:
        if plan.min_size > 0:
            async with pool.cond:
                await pool.fill_free_pool(False)
    except BaseException:
        pool.terminate()
        await pool.wait_closed()
        raise
    return pool


async def close_pool(pool: Pool) -> None:
    """``close()``, then ``wait_closed()`` (aiomysql's interface)."""
    pool.close()
    await pool.wait_closed()
