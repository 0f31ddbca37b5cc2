"""``create_pool`` and ``connect`` for any DSN: its scheme picks the driver adapter.

The connect path, for every driver (see ARCHITECTURE.md)::

    create_pool / connect / async_creator / the typed entry points
        -> _plan.resolve(): ONE pass of every check, before any network call -> Plan
        -> the driver adapter (asyncpg, psycopg, aiomysql, asyncmy, redshift_connector):
           the driver's own pool, or one connection, each login through
        -> _dialer.Dialer.dial(): credentials -> rate cap -> one bounded attempt -> classify
           -> invalidate and retry once -> a clean error

``create_pool`` returns a :class:`PendingPool`, to be awaited or entered.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from types import TracebackType
from typing import Any, Generic, TypeVar

import anyio

from .._cache import CredentialCache
from .._config import ConfigLike
from ._dsn import Driver
from ._plan import DEFAULT_LOGIN_TIMEOUT, DEFAULT_SIZES, Plan, driver_module, resolve

__all__ = [
    "DEFAULT_LOGIN_TIMEOUT",
    "DEFAULT_SIZES",
    "PendingPool",
    "Plan",
    "connect",
    "connect_with",
    "create_pool",
    "driver_module",
    "open_pool",
    "resolve",
]

PoolT = TypeVar("PoolT", covariant=True)


class PendingPool(Generic[PoolT]):
    """What ``create_pool`` returns, as asyncpg's and aiomysql's do: ``await`` it for the pool,
    or enter it with ``async with`` for a pool that is closed (and waited for) when the block
    exits.

    Nothing starts until it is awaited or entered, once: a second start is a ``RuntimeError``.
    When the block is cancelled (a timeout around it), the pool still closes, shielded, for up
    to 5 s; then, or when the close itself is cut short, its ``terminate()`` closes what is left.
    """

    __slots__ = ("_close", "_open", "_pool", "_started")

    def __init__(
        self, open_pool: Callable[[], Awaitable[PoolT]], close: Callable[[Any], Awaitable[None]]
    ) -> None:
        self._open = open_pool
        self._close = close
        self._pool: Any = None
        self._started = False

    def __await__(self) -> Generator[Any, None, PoolT]:
        return self._start().__await__()

    async def _start(self) -> PoolT:
        if self._started:
            raise RuntimeError(
                "this create_pool(...) was already awaited or entered; call it again for "
                "another pool"
            )
        self._started = True
        return await self._open()

    async def __aenter__(self) -> PoolT:
        pool = await self._start()
        self._pool = pool
        return pool

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if exc_type is not None and issubclass(exc_type, anyio.get_cancelled_exc_class()):
            # A timeout around the block: close anyway, shielded, for a bounded time, then
            # close whatever is left at once (connections the block never gave back).
            try:
                with anyio.CancelScope(shield=True), anyio.move_on_after(_CANCELLED_CLOSE_GRACE):
                    await self._close(pool)
                    return
            except BaseException:
                _terminate(pool)
                raise
            _terminate(pool)
            return
        try:
            await self._close(pool)
        except BaseException:
            _terminate(pool)  # the close was cut short: leave no connection open
            raise


_CANCELLED_CLOSE_GRACE = 5.0  # seconds a cancelled block's pool gets to close gracefully


def _terminate(pool: Any) -> None:
    """Close every connection now (psycopg_pool has no ``terminate()``: nothing to do)."""
    terminate = getattr(pool, "terminate", None)
    if terminate is not None:
        terminate()


def open_pool(
    dsn: str,
    *,
    aws_iam: ConfigLike,
    cache: CredentialCache | None,
    driver: Driver | None,
    min_size: int | None,
    max_size: int | None,
    connect_rate: float | None,
    driver_kwargs: dict[str, Any],
) -> PendingPool[Any]:
    """The :class:`PendingPool` behind ``create_pool`` and the typed entry points: plans and
    builds the pool when awaited or entered; ``driver`` is the typed entry point's."""
    plans: list[Plan] = []

    async def start() -> Any:
        plan = resolve(
            dsn,
            aws_iam,
            cache,
            driver=driver,
            driver_kwargs=driver_kwargs,
            pool=True,
            min_size=min_size,
            max_size=max_size,
            connect_rate=connect_rate,
        )
        plans.append(plan)
        return await plan.driver.create_pool(plan)

    async def close(pool: Any) -> None:
        await plans[0].driver.close_pool(pool)

    return PendingPool(start, close)


def create_pool(
    dsn: str,
    *,
    aws_iam: ConfigLike,
    min_size: int | None = None,
    max_size: int | None = None,
    cache: CredentialCache | None = None,
    connect_rate: float | None = None,
    **driver_kwargs: Any,
) -> PendingPool[Any]:
    """A driver-native pool whose every new connection authenticates with AWS IAM:
    ``pool = await create_pool(...)``, or ``async with create_pool(...) as pool`` to close it
    (and wait for its connections) when the block exits.

    The DSN's scheme picks the driver (SQLAlchemy's spelling): ``postgresql://`` and
    ``postgresql+asyncpg://`` give the real ``asyncpg.Pool`` (default min 10 / max 10);
    ``postgresql+psycopg://`` the real ``psycopg_pool.AsyncConnectionPool`` (4 / 4);
    ``mysql://`` and ``mysql+aiomysql://`` a :class:`~iampool.MySQLPool` with aiomysql's
    interface (1 / 10); ``mysql+asyncmy://`` asyncmy's own pool (1 / 10); ``redshift://`` a
    :class:`~iampool.RedshiftPool` (1 / 10), whose host may be left out to discover the endpoint.
    ``aws_iam`` is an ``AwsIamConfig``, the block as a dict, or ``encrypted_extra`` JSON;
    ``connect_rate`` caps new connections per second to the endpoint (RDS advises staying under
    ~200/s); ``connect_timeout`` bounds each login (30 s by default); other keyword arguments go
    to the driver. The pool is typed ``Any``: the typed
    entry points (``iampool.asyncpg.create_pool`` and the like) give the driver's own type.

    Raises:
        ConfigError: invalid configuration, DSN or driver keyword (every problem listed),
            before any AWS call.
        MissingExtraError: the DSN's driver is not installed.
    """
    return open_pool(
        dsn,
        aws_iam=aws_iam,
        cache=cache,
        driver=None,
        min_size=min_size,
        max_size=max_size,
        connect_rate=connect_rate,
        driver_kwargs=driver_kwargs,
    )


async def connect(
    dsn: str,
    *,
    aws_iam: ConfigLike,
    cache: CredentialCache | None = None,
    connect_rate: float | None = None,
    **driver_kwargs: Any,
) -> Any:
    """One driver-native connection authenticated with AWS IAM (the DSN's scheme picks the
    driver, as for :func:`create_pool`); ``connect_timeout=`` bounds the login (30 s)."""
    return await connect_with(None, dsn, aws_iam, cache, connect_rate, driver_kwargs)


async def connect_with(
    driver: Driver | None,
    dsn: str,
    aws_iam: ConfigLike,
    cache: CredentialCache | None,
    connect_rate: float | None,
    driver_kwargs: dict[str, Any],
) -> Any:
    """:func:`connect` for the typed entry points (``driver``: the one they serve)."""
    plan = resolve(
        dsn, aws_iam, cache, driver=driver, driver_kwargs=driver_kwargs, connect_rate=connect_rate
    )
    return await plan.driver.connect(plan)
