"""``create_pool`` and ``connect`` for any DSN: its scheme picks the driver module.

Each driver has a module here that takes a validated :class:`~iampool.pools._dsn.Target` and a
``DbAuth``: ``postgres`` (asyncpg), ``psycopg``, ``mysql`` (aiomysql), ``asyncmy`` and
``redshift`` (redshift-connector). They all satisfy one protocol, :class:`DriverModule`, and are
imported on demand (each driver is an optional extra). The typed entry points users import
(``iampool.asyncpg``, ``iampool.psycopg``, ...) call the same modules through :func:`resolve`
and :func:`open_pool`.

:func:`resolve` is where every input is checked before any AWS call: the block, the DSN, the
driver's extra, other drivers' keyword spellings, and the settings the driver module will
build. ``create_pool`` returns a :class:`PendingPool`, to be awaited or entered.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import json
import sys
from collections.abc import Awaitable, Callable, Generator, Mapping
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import anyio

from .._cache import CredentialCache, default_cache
from .._config import SUPERSET_NO_REDSHIFT_SELECTOR, ConfigLike, coerce_config
from .._credentials import DbAuth
from .._errors import ConfigError, ConfigProblem, MissingExtraError
from ..auth import auth_for, prefetch
from ._dsn import SCHEMES, Driver, Target, parse_target

__all__ = [
    "DEFAULT_SIZES",
    "EXTRAS",
    "DriverModule",
    "PendingPool",
    "connect",
    "create_pool",
    "driver_module",
    "open_pool",
    "require_driver",
    "resolve",
]

PoolT = TypeVar("PoolT", covariant=True)
ConnectionT = TypeVar("ConnectionT", covariant=True)

# Each driver's own pool defaults (min, max): asyncpg 10/10, psycopg_pool 4/4, aiomysql and
# asyncmy 1/10; RedshiftPool follows aiomysql.
DEFAULT_SIZES: dict[Driver, tuple[int, int]] = {
    "asyncpg": (10, 10),
    "psycopg": (4, 4),
    "aiomysql": (1, 10),
    "asyncmy": (1, 10),
    "redshift_connector": (1, 10),
}


class DriverModule(Protocol[PoolT, ConnectionT]):
    """What a driver module offers: a pool and a connection for a validated target."""

    def check_settings(self, target: Target, driver_kwargs: Mapping[str, Any]) -> None:
        """Raise ``ConfigError`` for DSN options or keyword arguments the driver module would
        refuse (before any AWS call: :func:`resolve` calls it)."""
        ...

    async def create_pool(
        self,
        target: Target,
        auth: DbAuth,
        *,
        min_size: int,
        max_size: int,
        connect_rate: float | None,
        **driver_kwargs: Any,
    ) -> PoolT:
        """A pool of the driver's connections, each authenticated with ``auth``."""
        ...

    async def connect(
        self, target: Target, auth: DbAuth, *, connect_rate: float | None, **driver_kwargs: Any
    ) -> ConnectionT:
        """One connection of the driver, authenticated with ``auth``."""
        ...


def driver_module(driver: Driver) -> DriverModule[Any, Any]:
    """The module for a driver, imported on first use."""
    if driver == "asyncpg":
        from . import postgres

        return postgres
    if driver == "psycopg":
        from . import psycopg

        return psycopg
    if driver == "aiomysql":
        from . import mysql

        return mysql
    if driver == "asyncmy":
        from . import asyncmy

        return asyncmy
    from . import redshift

    return redshift


def resolve(
    dsn: str,
    aws_iam: ConfigLike,
    cache: CredentialCache | None,
    *,
    driver: Driver | None = None,
    driver_kwargs: Mapping[str, Any] | None = None,
    pool: bool = False,
) -> tuple[Target, DbAuth]:
    """Validate a DSN against its IAM configuration and build the authenticator.

    ``driver``: the driver a typed entry point serves; a DSN naming another one is refused.
    ``driver_kwargs``: the caller's keyword arguments for the driver (a pool's when ``pool``),
    checked here too, so that every mistake surfaces before the first AWS call.

    Raises:
        ConfigError: invalid configuration, DSN or driver keyword, or a DSN for another driver.
        MissingExtraError: the DSN's driver is not installed.
    """
    if driver_kwargs:
        _refuse_driver_spellings(dsn, driver_kwargs, pool=pool)
    try:
        config = coerce_config(aws_iam)
    except ConfigError as exc:
        if not _is_redshift(dsn) or _has_redshift_selector(aws_iam):
            raise
        # Without a selector the block reads as an RDS one, which asks for db_username; for a
        # redshift:// DSN the missing piece is the selector, as Superset says.
        others = [
            problem
            for problem in exc.errors
            if not (problem.field == "db_username" and problem.message.startswith("is required"))
        ]
        raise ConfigError([_NO_SELECTOR, *others]) from None
    if not config.enabled:
        raise ConfigError(
            ConfigProblem("enabled", "is false: this aws_iam block does not ask for IAM auth")
        )
    target = parse_target(dsn, config)
    if driver is not None and target.driver != driver:
        schemes = ", ".join(f"{name}://" for name, (_, known) in SCHEMES.items() if known == driver)
        message = (
            f"is a {target.driver} DSN, but this entry point serves {driver} ({schemes}); "
            f"use iampool.create_pool or the {target.driver} entry point"
        )
        raise ConfigError(ConfigProblem("dsn", message), context="DSN")
    if target.engine == "redshift" and config.backend == "rds":
        raise ConfigError(_NO_SELECTOR)
    if config.backend == "dsql" and target.engine != "postgresql":
        raise ConfigError(
            ConfigProblem("dsn", "aws_iam describes Aurora DSQL, which speaks PostgreSQL: use a "
                                 "postgresql:// or postgresql+psycopg:// DSN"),
            context="DSN",
        )  # fmt: skip
    if target.engine != "redshift" and config.backend not in ("rds", "dsql"):
        raise ConfigError(
            ConfigProblem("dsn", f"aws_iam describes {config.backend}; use a redshift:// DSN"),
            context="DSN",
        )
    require_driver(target.driver, dsn)
    _check_driver_settings(target, driver_kwargs or {}, pool=pool)
    auth = auth_for(
        config,
        host=target.signed_host,  # the endpoint's name when the DSN's host is a tunnel
        port=target.signed_port,
        cache=cache if cache is not None else default_cache(),
    )
    prefetch(auth)  # a pool or a connection is on its way: its credentials can start now
    return target, auth


# Each driver's pip extra, what to call it, and the modules it brings. They are imported before
# any AWS call, so a missing one names the install line instead of failing at the first connect.
EXTRAS: dict[Driver, tuple[str, str, tuple[str, ...]]] = {
    "asyncpg": ("postgres", "asyncpg", ("asyncpg",)),
    "psycopg": ("psycopg", "psycopg 3 and psycopg-pool", ("psycopg", "psycopg_pool")),
    "aiomysql": ("mysql", "aiomysql", ("pymysql", "aiomysql")),
    "asyncmy": ("asyncmy", "asyncmy", ("asyncmy",)),
    "redshift_connector": ("redshift", "redshift-connector", ("redshift_connector",)),
}


def require_driver(driver: Driver, dsn: str = "") -> None:
    """Import a driver's modules, or say which extra installs them.

    Raises:
        MissingExtraError: a module of the driver (or one it needs) is not installed.
    """
    extra, label, modules = EXTRAS[driver]
    for name in modules:
        if sys.modules.get(name) is not None:
            continue  # imported already (import_module costs ~100 us even then)
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            scheme = dsn.partition("://")[0] if "://" in dsn else driver
            raise MissingExtraError(
                f"{scheme}:// DSNs need {label}, which is not installed (No module named "
                f"{exc.name!r}): pip install 'iampool[{extra}]' (from a checkout: "
                f"pip install '.[{extra}]')",
                name=exc.name,
            ) from exc


# Other drivers' spellings of what iampool takes otherwise, refused before any AWS call with
# iampool's spelling. Pool sizes: one spelling for every driver. Endpoint, user and database:
# they come from the DSN (which the token is signed for) and the aws_iam block, never from a
# second source that could disagree with them.
_SIZE_SPELLINGS = {"minsize": "min_size", "maxsize": "max_size"}
_DSN_PARTS = ("host", "port", "user", "database", "db", "dbname")


def _refuse_driver_spellings(dsn: str, driver_kwargs: Mapping[str, Any], *, pool: bool) -> None:
    scheme = dsn.partition("://")[0] if "://" in dsn else "postgresql"
    engine, driver = SCHEMES.get(scheme.lower(), ("postgresql", "asyncpg"))
    problems: list[ConfigProblem] = []
    for name, spelling in _SIZE_SPELLINGS.items():
        if name in driver_kwargs:
            message = (
                f"is aiomysql's spelling: pass {spelling}="
                if pool
                else f"is a pool setting (create_pool's {spelling}=); connect opens one connection"
            )
            problems.append(ConfigProblem(name, message))
    problems.extend(_login_problems(scheme, engine, dsn, driver_kwargs))
    connection_kwargs = driver_kwargs.get("kwargs")
    if pool and driver == "psycopg" and isinstance(connection_kwargs, Mapping):
        # psycopg_pool's kwargs= are libpq settings of every connection: the same rules.
        problems.extend(
            ConfigProblem(f"kwargs.{problem.field}", problem.message)
            for problem in _login_problems(scheme, engine, dsn, connection_kwargs)
        )
    if problems:
        raise ConfigError(problems, context="driver keyword")


def _login_problems(
    scheme: str, engine: str, dsn: str, driver_kwargs: Mapping[str, Any]
) -> list[ConfigProblem]:
    """Keywords for the endpoint, the login or the database, which the DSN and aws_iam say."""
    problems: list[ConfigProblem] = []
    given = [name for name in _DSN_PARTS if name in driver_kwargs]
    if given:
        example = _dsn_example(scheme, engine, dsn, driver_kwargs)
        problems.extend(
            ConfigProblem(name, _dsn_part_message(name, engine, example)) for name in given
        )
    if "password" in driver_kwargs:
        problems.append(ConfigProblem("password", "is not used: IAM authentication supplies it"))
    for name in ("dsn", "conninfo"):
        if name in driver_kwargs:
            problems.append(ConfigProblem(name, "is the first argument, the DSN"))
    return problems


def _dsn_example(scheme: str, engine: str, dsn: str, driver_kwargs: Mapping[str, Any]) -> str:
    """The DSN that says what the keywords tried to: theirs over the DSN's own parts (never a
    password: there is none to say)."""
    try:
        parts = urlsplit(f"//{dsn.partition('://')[2]}")
        port: Any = parts.port
    except ValueError:  # a DSN parse_target will refuse: the example keeps the keywords only
        parts, port = urlsplit("//"), None
    database = next(
        (driver_kwargs[name] for name in ("database", "db", "dbname") if name in driver_kwargs),
        unquote(parts.path.lstrip("/")) or "DATABASE",
    )
    host = str(driver_kwargs.get("host", parts.hostname or "HOST"))
    host = f"[{host}]" if ":" in host else host  # IPv6
    port = driver_kwargs.get("port", port)
    user = driver_kwargs.get("user", unquote(parts.username or ""))
    login = f"{user}@" if user and engine != "redshift" else ""
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "password"])
    return (
        f"{scheme}://{login}{host}{'' if port is None else f':{port}'}/{database}"
        f"{'?' + query if query else ''}"
    )


def _dsn_part_message(name: str, engine: str, example: str) -> str:
    if engine == "redshift":
        if name == "user":
            return "is not used: the login user comes from the Redshift API (aws_iam)"
        if name in ("database", "db", "dbname"):
            return "is not used: the database is aws_iam.db_name (the DSN's path may repeat it)"
        return f"goes in the DSN, or leave the host out to look the endpoint up: {example}"
    if name in ("host", "port"):
        return f"goes in the DSN, the endpoint the IAM token is signed for: {example}"
    if name == "user":
        return f"is aws_iam.db_username; the DSN may repeat it: {example}"
    return f"goes in the DSN as its path: {example}"


def _check_driver_settings(target: Target, driver_kwargs: Mapping[str, Any], *, pool: bool) -> None:
    """The driver module's own checks (:meth:`DriverModule.check_settings`: keywords iampool
    sets, ``ssl`` turned off, MySQL settings that redirect the token, CA files) and keywords the
    driver does not take: they surface before any AWS call, and when an ``async_creator`` is
    made rather than at its first connect."""
    kwargs = dict(driver_kwargs)
    if target.driver == "asyncpg":
        kwargs.pop("connect", None)  # the pool's hook
    elif pool and target.driver in ("aiomysql", "asyncmy"):
        kwargs.pop("pool_recycle", None)
        kwargs.pop("echo", None)
    driver_module(target.driver).check_settings(target, kwargs)
    accepted = _accepted_keywords(target.driver, pool=pool)
    unknown = [name for name in driver_kwargs if accepted is not None and name not in accepted]
    if unknown:
        label = EXTRAS[target.driver][1]
        raise ConfigError(
            [ConfigProblem(name, _unknown_message(name, label, accepted)) for name in unknown],
            context="driver keyword",
        )


def _unknown_message(name: str, label: str, accepted: frozenset[str] | None) -> str:
    close = difflib.get_close_matches(name, sorted(accepted or ()), n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"is not a keyword {label} takes{hint}"


@functools.cache
def _accepted_keywords(driver: Driver, *, pool: bool) -> frozenset[str] | None:
    """Every keyword the driver's connect (and pool) takes, read from the installed driver's
    signatures; None when they take any (psycopg's connections: libpq settings)."""
    sources: list[Any]
    names: set[str] = set()
    if driver == "asyncpg":
        import asyncpg

        sources = [asyncpg.connect, *([asyncpg.create_pool] if pool else [])]
    elif driver == "aiomysql":
        from aiomysql.connection import Connection

        sources = [Connection.__init__]
        names.update(("pool_recycle",) if pool else ())
    elif driver == "asyncmy":
        import asyncmy

        sources = [asyncmy.connect, *([asyncmy.Pool] if pool else [])]
    elif driver == "psycopg":
        if not pool:
            return None
        from psycopg_pool import AsyncConnectionPool

        sources = [AsyncConnectionPool.__init__]
    else:
        import redshift_connector

        sources = [redshift_connector.connect]
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    for source in sources:
        try:
            parameters = inspect.signature(source).parameters.values()
        except (TypeError, ValueError):  # no signature to read: let the driver judge
            return None
        names.update(parameter.name for parameter in parameters if parameter.kind in named)
    names.discard("self")
    return frozenset(names)


_NO_SELECTOR = ConfigProblem("aws_iam", SUPERSET_NO_REDSHIFT_SELECTOR)


def _is_redshift(dsn: str) -> bool:
    scheme, separator, _ = dsn.partition("://")
    known = SCHEMES.get(scheme.lower()) if separator else None
    return known is not None and known[0] == "redshift"


def _has_redshift_selector(aws_iam: ConfigLike) -> bool:
    """Whether the raw block names a cluster or a workgroup (it may be invalid otherwise)."""
    block: Any = aws_iam
    if isinstance(block, (str, bytes, bytearray)):
        try:
            block = json.loads(block)
        except (ValueError, RecursionError):
            return True  # not JSON: nothing to say about selectors, report the JSON error
    if isinstance(block, Mapping) and "aws_iam" in block:  # as AwsIamConfig.from_extra reads it
        block = block["aws_iam"]
    if not isinstance(block, Mapping):
        return True
    return block.get("workgroup_name") is not None or block.get("cluster_identifier") is not None


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


async def _close_awaiting(pool: Any) -> None:
    """asyncpg.Pool, psycopg_pool's pool, RedshiftPool: ``close()`` waits for the connections."""
    await pool.close()


async def _close_then_wait(pool: Any) -> None:
    """MySQLPool and asyncmy.Pool (aiomysql's interface): ``close()``, then ``wait_closed()``."""
    pool.close()
    await pool.wait_closed()


_CLOSERS: dict[Driver, Callable[[Any], Awaitable[None]]] = {
    "asyncpg": _close_awaiting,
    "psycopg": _close_awaiting,
    "aiomysql": _close_then_wait,
    "asyncmy": _close_then_wait,
    "redshift_connector": _close_awaiting,
}


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
    """The :class:`PendingPool` behind ``create_pool`` and the typed entry points: validates and
    builds the pool when awaited or entered; ``driver`` is the typed entry point's."""

    chosen: list[Driver] = []  # the DSN's driver, once resolved

    async def start() -> Any:
        target, auth = resolve(
            dsn, aws_iam, cache, driver=driver, driver_kwargs=driver_kwargs, pool=True
        )
        chosen.append(target.driver)
        default_min, default_max = DEFAULT_SIZES[target.driver]
        return await driver_module(target.driver).create_pool(
            target,
            auth,
            min_size=default_min if min_size is None else min_size,
            max_size=default_max if max_size is None else max_size,
            connect_rate=connect_rate,
            **driver_kwargs,
        )

    async def close(pool: Any) -> None:
        await _CLOSERS[chosen[0]](pool)

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
    ~200/s); other keyword arguments go to the driver. The pool is typed ``Any``: the typed
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
    driver, as for :func:`create_pool`)."""
    target, auth = resolve(dsn, aws_iam, cache, driver_kwargs=driver_kwargs)
    return await driver_module(target.driver).connect(
        target, auth, connect_rate=connect_rate, **driver_kwargs
    )
