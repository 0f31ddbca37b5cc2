"""Drivers' habits against the real servers behind the IAM gateways, with FakeAws.

``async with create_pool(...) as pool`` works for every driver and entry point, as with asyncpg
and aiomysql, and closes the pool on exit; other drivers' keyword spellings are refused before
any AWS call, with iampool's spelling in the message.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
import pytest

import iampool
from iampool import ConfigError, CredentialCache

pytestmark = pytest.mark.anyio


@dataclass(frozen=True)
class Driver:
    """One driver: the DSN scheme that picks it, its typed module, its database fixture."""

    name: str
    scheme: str
    module: str
    fixture: str


DRIVERS = {
    driver.name: driver
    for driver in (
        Driver("asyncpg", "postgresql", "iampool.asyncpg", "iam_postgres"),
        Driver("psycopg", "postgresql+psycopg", "iampool.psycopg", "iam_postgres"),
        Driver("aiomysql", "mysql", "iampool.aiomysql", "iam_mysql"),
        Driver("asyncmy", "mysql+asyncmy", "iampool.asyncmy", "iam_mysql"),
        Driver("redshift", "redshift", "iampool.redshift", "iam_redshift"),
    )
}


@pytest.fixture
async def cache() -> AsyncIterator[CredentialCache]:
    cache = CredentialCache()
    yield cache
    await cache.aclose()


@pytest.fixture
def prefetches(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Authenticators whose credentials creating a pool or a connection started to mint (the
    first AWS call, made in the background: counted here at once, without waiting for it)."""
    started: list[Any] = []
    prefetch = iampool.pools._plan.prefetch

    def counting(auth: Any) -> None:
        started.append(auth)
        prefetch(auth)

    monkeypatch.setattr(iampool.pools._plan, "prefetch", counting)
    return started


def dsn_for(driver: Driver, database: Any) -> str:
    return f"{driver.scheme}://{database.dsn.split('://', 1)[1]}"


async def current_user(driver: Driver, pool: Any) -> str:
    """Who the server says is logged in, on a connection of ``pool``."""
    if driver.name == "asyncpg":
        async with pool.acquire() as connection:
            return str(await connection.fetchval("SELECT current_user"))
    if driver.name == "psycopg":
        async with pool.connection() as connection:
            row = await (await connection.execute("SELECT current_user")).fetchone()
            return str(row[0])
    if driver.name == "redshift":
        return str(await pool.fetchval("SELECT current_user"))
    async with pool.acquire() as connection, connection.cursor() as cursor:
        await cursor.execute("SELECT CURRENT_USER()")
        (user,) = await cursor.fetchone()
        return str(user).split("@", 1)[0]


def is_closed(driver: Driver, pool: Any) -> bool:
    if driver.name == "asyncpg":
        return bool(pool.is_closing()) and pool.get_size() == 0
    if driver.name == "psycopg":
        return bool(pool.closed)
    if driver.name == "redshift":
        return bool(pool.get_size() == 0)
    if driver.name == "asyncmy":
        return bool(pool.size == 0)
    return bool(pool.closed and pool.size == 0)


@pytest.mark.parametrize("entry", ["iampool", "typed"])
@pytest.mark.parametrize("name", sorted(DRIVERS))
async def test_async_with_create_pool_gives_the_pool_and_closes_it_on_exit(
    name: str, entry: str, request: pytest.FixtureRequest, cache: CredentialCache
) -> None:
    driver = DRIVERS[name]
    database = request.getfixturevalue(driver.fixture)
    module: Any = iampool if entry == "iampool" else importlib.import_module(driver.module)

    async with module.create_pool(
        dsn_for(driver, database), aws_iam=database.config, min_size=1, max_size=2, cache=cache
    ) as pool:
        user = await current_user(driver, pool)
        assert not is_closed(driver, pool)

    assert user == database.user
    assert is_closed(driver, pool)
    await anyio.to_thread.run_sync(database.gateway.wait_idle)  # every connection was closed


@pytest.mark.parametrize("name", ["asyncpg", "aiomysql"])
async def test_the_pool_is_closed_when_the_block_raises(
    name: str, request: pytest.FixtureRequest, cache: CredentialCache
) -> None:
    driver = DRIVERS[name]
    database = request.getfixturevalue(driver.fixture)
    pools = []

    async def fail_inside_the_block() -> None:
        async with iampool.create_pool(
            database.dsn, aws_iam=database.config, min_size=1, max_size=2, cache=cache
        ) as pool:
            pools.append(pool)
            raise LookupError("the block failed")

    with pytest.raises(LookupError, match="the block failed"):
        await fail_inside_the_block()

    assert is_closed(driver, pools[0])
    await anyio.to_thread.run_sync(database.gateway.wait_idle)


async def test_await_create_pool_still_gives_an_open_pool(
    iam_postgres: Any, cache: CredentialCache
) -> None:
    pool = await iampool.create_pool(
        iam_postgres.dsn, aws_iam=iam_postgres.config, min_size=1, max_size=1, cache=cache
    )
    try:
        assert await current_user(DRIVERS["asyncpg"], pool) == iam_postgres.user
    finally:
        await pool.close()


# (driver, keyword arguments, the fields refused, a phrase of iampool's spelling)
SPELLINGS = [
    ("aiomysql", {"minsize": 1, "maxsize": 5}, ["minsize", "maxsize"], "pass min_size="),
    ("asyncmy", {"minsize": 1}, ["minsize"], "pass min_size="),
    ("aiomysql", {"db": "test"}, ["db"], "goes in the DSN as its path: mysql://"),
    ("asyncpg", {"host": "127.0.0.1", "port": 5432}, ["host", "port"], "goes in the DSN"),
    ("asyncpg", {"user": "app", "database": "app"}, ["user", "database"], "aws_iam.db_username"),
    ("psycopg", {"dbname": "postgres"}, ["dbname"], "goes in the DSN as its path"),
    ("psycopg", {"kwargs": {"dbname": "app"}}, ["kwargs.dbname"], "goes in the DSN as its path"),
    ("psycopg", {"kwargs": {"sslmode": "disable"}}, ["sslmode"], "is set by iampool"),
    ("asyncpg", {"ssl": False}, ["ssl"], "IAM connections always use TLS"),
    ("asyncmy", {"ssl": "disable"}, ["ssl"], "IAM connections always use TLS"),
    (
        "aiomysql",
        {"unix_socket": "/run/mysqld.sock"},
        ["unix_socket"],
        "connects to a local socket",
    ),
    # Typos and other unknown keywords, read against the installed driver's signatures.
    (
        "aiomysql",
        {"autocomit": True},
        ["autocomit"],
        "not a keyword aiomysql takes; did you mean autocommit?",
    ),
    ("asyncpg", {"comand_timeout": 5}, ["comand_timeout"], "did you mean command_timeout?"),
    ("psycopg", {"max_idel": 60}, ["max_idel"], "not a keyword psycopg 3 and psycopg-pool takes"),
    ("asyncmy", {"pool_recyle": 60}, ["pool_recyle"], "did you mean pool_recycle?"),
    (
        "redshift",
        {"timout": 5},
        ["timout"],
        "not a keyword redshift-connector takes; did you mean timeout?",
    ),
]


@pytest.mark.parametrize("entry", ["create_pool", "typed create_pool"])
@pytest.mark.parametrize(("name", "kwargs", "fields", "spelling"), SPELLINGS)
async def test_driver_spellings_are_refused_before_any_aws_call(
    name: str,
    kwargs: dict[str, Any],
    fields: list[str],
    spelling: str,
    entry: str,
    request: pytest.FixtureRequest,
    cache: CredentialCache,
    fake_aws: Any,
    prefetches: list[Any],
) -> None:
    driver = DRIVERS[name]
    database = request.getfixturevalue(driver.fixture)
    module: Any = iampool if entry == "create_pool" else importlib.import_module(driver.module)
    assume_roles = fake_aws.calls["AssumeRole"]

    with pytest.raises(ConfigError) as caught:
        await module.create_pool(
            dsn_for(driver, database), aws_iam=database.config, cache=cache, **kwargs
        )
    await anyio.sleep(0.2)  # a prefetch started by mistake would have called AWS by now

    assert prefetches == []  # no credentials were asked for
    assert caught.value.fields == fields
    assert spelling in str(caught.value)
    assert fake_aws.calls["AssumeRole"] == assume_roles
    assert cache.stats()["misses"] == 0


async def test_a_minsize_for_connect_is_refused_naming_the_pool_setting(
    iam_mysql: Any, cache: CredentialCache, fake_aws: Any, prefetches: list[Any]
) -> None:
    assume_roles = fake_aws.calls["AssumeRole"]

    with pytest.raises(ConfigError, match="create_pool's min_size=") as caught:
        await iampool.connect(iam_mysql.dsn, aws_iam=iam_mysql.config, cache=cache, minsize=1)

    assert caught.value.fields == ["minsize"]
    assert prefetches == []
    assert fake_aws.calls["AssumeRole"] == assume_roles


async def test_the_refusal_shows_the_dsn_the_keywords_meant(
    iam_postgres: Any, cache: CredentialCache
) -> None:
    host_port = iam_postgres.dsn.split("@", 1)[1].split("/", 1)[0]

    with pytest.raises(ConfigError) as caught:
        await iampool.create_pool(
            f"postgresql://{host_port}/postgres",
            aws_iam=iam_postgres.config,
            cache=cache,
            user="app",
            database="reports",
        )

    assert f"postgresql://app@{host_port}/reports" in str(caught.value)


@pytest.mark.parametrize("name", ["asyncpg", "aiomysql", "asyncmy", "redshift"])
async def test_a_cancelled_block_still_closes_every_connection(
    name: str, request: pytest.FixtureRequest, cache: CredentialCache
) -> None:
    driver = DRIVERS[name]
    database = request.getfixturevalue(driver.fixture)
    pools = []

    with anyio.CancelScope() as scope:
        async with iampool.create_pool(
            dsn_for(driver, database), aws_iam=database.config, min_size=2, max_size=2, cache=cache
        ) as pool:
            pools.append(pool)
            assert await current_user(driver, pool) == database.user
            scope.cancel()  # as a timeout around the whole block would
            await anyio.sleep_forever()

    assert scope.cancelled_caught
    assert is_closed(driver, pools[0])
    await anyio.to_thread.run_sync(database.gateway.wait_idle)  # no connection left open
