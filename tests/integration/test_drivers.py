"""psycopg 3 and asyncmy: the same guarantees as asyncpg and aiomysql, through the IAM gateway.

Each test runs for both drivers against the real PostgreSQL 15 / MariaDB 10.11 behind the
session's gateways; every test has its own CredentialCache so AWS calls and signatures count
exactly.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import anyio
import anyio.to_thread
import pytest

import iampool
import iampool.asyncmy
import iampool.psycopg
from iampool import AuthTokenRejected, CredentialCache, TlsNotOfferedError
from iampool.testing import IamDatabase, IamGateway
from tests.users import APP

pytestmark = pytest.mark.anyio


@dataclass(frozen=True)
class Driver:
    name: str  # "psycopg" or "asyncmy"
    database: IamDatabase

    @property
    def scheme(self) -> str:
        return "postgresql+psycopg" if self.name == "psycopg" else "mysql+asyncmy"

    @property
    def dsn(self) -> str:
        return self.scheme + "://" + self.database.dsn.split("://", 1)[1]

    @property
    def gateway(self) -> IamGateway:
        return self.database.gateway

    async def current_user(self, connection: Any) -> str:
        if self.name == "psycopg":
            cursor = await connection.execute("SELECT current_user")
            (user,) = await cursor.fetchone()
        else:
            async with connection.cursor() as cursor:
                await cursor.execute("SELECT CURRENT_USER()")
                (user,) = await cursor.fetchone()
        return str(user).split("@", 1)[0]  # MariaDB answers 'app@%'

    async def close(self, connection: Any) -> None:
        if self.name == "psycopg":
            await connection.close()
        else:
            await connection.ensure_closed()

    async def close_pool(self, pool: Any) -> None:
        if self.name == "psycopg":
            await pool.close()
        else:
            pool.close()
            await pool.wait_closed()

    def borrow(self, pool: Any) -> Any:
        return pool.connection() if self.name == "psycopg" else pool.acquire()


@pytest.fixture(params=["psycopg", "asyncmy"])
def driver(request: pytest.FixtureRequest) -> Driver:
    database = request.getfixturevalue(
        "iam_postgres" if request.param == "psycopg" else "iam_mysql"
    )
    database.gateway.reset_counters()
    return Driver(request.param, database)


@pytest.fixture
async def cache() -> AsyncIterator[CredentialCache]:
    cache = CredentialCache()
    yield cache
    await cache.aclose()


async def wait_gateway_idle(gateway: IamGateway) -> None:
    await anyio.to_thread.run_sync(gateway.wait_idle)


async def test_500_tasks_on_a_pool_of_20_share_one_assume_role_and_one_token(
    driver: Driver, cache: CredentialCache, fake_aws: Any
) -> None:
    assume_roles = fake_aws.calls["AssumeRole"]
    pool = await iampool.create_pool(
        driver.dsn, aws_iam=driver.database.config, min_size=0, max_size=20, cache=cache
    )
    users: list[str] = []
    try:

        async def task() -> None:
            async with driver.borrow(pool) as connection:
                users.append(await driver.current_user(connection))

        async with anyio.create_task_group() as group:
            for _ in range(500):
                group.start_soon(task)
    finally:
        await driver.close_pool(pool)

    assert Counter(users) == {APP: 500}
    assert fake_aws.calls["AssumeRole"] - assume_roles == 1
    assert (cache.stats()["sts_calls"], cache.stats()["tokens_signed"]) == (1, 1)
    assert 1 <= driver.gateway.accepted <= 20  # never more connections than max_size
    assert driver.gateway.rejected == Counter()
    await wait_gateway_idle(driver.gateway)  # close() left no connection behind


async def test_the_pool_is_the_drivers_own(driver: Driver, cache: CredentialCache) -> None:
    module: Any = iampool.psycopg if driver.name == "psycopg" else iampool.asyncmy
    pool = await module.create_pool(
        driver.dsn, aws_iam=driver.database.config, min_size=2, max_size=2, cache=cache
    )
    try:
        if driver.name == "psycopg":
            from psycopg_pool import AsyncConnectionPool

            assert isinstance(pool, AsyncConnectionPool)
        else:
            import asyncmy

            assert isinstance(pool, asyncmy.Pool)
        async with driver.borrow(pool) as connection:
            assert await driver.current_user(connection) == APP
    finally:
        await driver.close_pool(pool)
    assert driver.gateway.accepted == 2  # min_size filled up front, then reused


async def test_connect_returns_a_driver_connection_logged_in_as_the_iam_user(
    driver: Driver, cache: CredentialCache
) -> None:
    connection = await iampool.connect(driver.dsn, aws_iam=driver.database.config, cache=cache)
    try:
        if driver.name == "psycopg":
            import psycopg

            assert isinstance(connection, psycopg.AsyncConnection)
        else:
            import asyncmy

            assert isinstance(connection, asyncmy.Connection)
        assert await driver.current_user(connection) == APP
    finally:
        await driver.close(connection)
    assert driver.gateway.accepted == 1


async def test_a_rejected_token_is_retried_once_with_a_fresh_one(
    driver: Driver, cache: CredentialCache
) -> None:
    driver.gateway.reject_next(1)
    connection = await iampool.connect(driver.dsn, aws_iam=driver.database.config, cache=cache)
    await driver.close(connection)

    assert driver.gateway.rejected == Counter({"forced": 1})
    assert driver.gateway.accepted == 1
    assert cache.stats()["tokens_signed"] == 2  # the refused token was dropped and re-signed


async def test_a_pool_retries_a_rejected_token_once_with_a_fresh_one(
    driver: Driver, cache: CredentialCache
) -> None:
    driver.gateway.reject_next(1)
    pool = await iampool.create_pool(
        driver.dsn, aws_iam=driver.database.config, min_size=1, max_size=1, cache=cache
    )
    try:
        async with driver.borrow(pool) as connection:
            assert await driver.current_user(connection) == APP
    finally:
        await driver.close_pool(pool)

    assert driver.gateway.rejected == Counter({"forced": 1})
    assert driver.gateway.accepted == 1
    assert cache.stats()["tokens_signed"] == 2


async def test_a_token_refused_twice_raises_auth_token_rejected_without_the_token(
    driver: Driver, cache: CredentialCache
) -> None:
    driver.gateway.reject_next(2)
    with pytest.raises(AuthTokenRejected) as caught:
        await iampool.connect(driver.dsn, aws_iam=driver.database.config, cache=cache)

    expected = "PAM authentication failed" if driver.name == "psycopg" else "Access denied"
    assert expected in caught.value.server_message
    assert caught.value.user == APP
    assert driver.gateway.rejected == Counter({"forced": 2})
    # Nothing reachable from the error holds the token: not its text, its cause, or (psycopg)
    # libpq's connection object, which keeps the password it sent.
    error: BaseException | None = caught.value
    while error is not None:
        assert "X-Amz-Signature" not in str(error)
        assert "X-Amz-Signature" not in repr(vars(error))
        assert getattr(error, "pgconn", None) is None
        error = error.__cause__ or error.__context__


async def test_a_pool_that_cannot_log_in_raises_auth_token_rejected(
    driver: Driver, cache: CredentialCache
) -> None:
    driver.gateway.reject_next(2)
    before = asyncio.all_tasks()
    with pytest.raises(AuthTokenRejected):
        await iampool.create_pool(
            driver.dsn, aws_iam=driver.database.config, min_size=1, max_size=2, cache=cache
        )

    assert driver.gateway.rejected == Counter({"forced": 2})
    await wait_gateway_idle(driver.gateway)
    assert asyncio.all_tasks() <= before | {asyncio.current_task()}  # the pool was closed


async def test_verify_full_fails_against_a_ca_that_did_not_sign_the_server(
    driver: Driver, cache: CredentialCache
) -> None:
    system_ca = ssl.get_default_verify_paths().openssl_cafile
    query = urlencode({"sslmode": "verify-full", "sslrootcert": system_ca})
    dsn = f"{driver.dsn.split('?', 1)[0]}?{query}"
    with pytest.raises(Exception) as caught:  # noqa: PT011 - each driver raises its own
        await iampool.connect(dsn, aws_iam=driver.database.config, cache=cache)

    # psycopg reports libpq's words; asyncmy wraps Python's SSLCertVerificationError.
    chain = []
    error: BaseException | None = caught.value
    while error is not None:
        chain.append(error)
        error = error.__cause__
    assert any(
        isinstance(error, ssl.SSLCertVerificationError) or "certificate verify failed" in str(error)
        for error in chain
    )
    assert driver.gateway.accepted == 0


async def test_verify_full_against_the_gateways_ca_works(
    driver: Driver, cache: CredentialCache
) -> None:
    assert "sslmode=verify-full" in driver.dsn
    connection = await iampool.connect(driver.dsn, aws_iam=driver.database.config, cache=cache)
    try:
        assert await driver.current_user(connection) == APP
    finally:
        await driver.close(connection)


UPSTREAMS = {
    "psycopg": os.environ.get(
        "IAMPOOL_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
    ),
    "asyncmy": os.environ.get("IAMPOOL_TEST_MYSQL_DSN", "mysql://root@127.0.0.1:3306/test"),
}


@pytest.mark.parametrize("entry", ["connect", "create_pool"])
async def test_a_server_not_offering_tls_never_receives_the_token(
    driver: Driver, entry: str, fake_aws: Any, cache: CredentialCache
) -> None:
    protocol: Any = driver.gateway.protocol
    with IamGateway(
        protocol, upstream=UPSTREAMS[driver.name], authority=fake_aws, offer_tls=False
    ) as plain:
        dsn = driver.scheme + "://" + plain.dsn(APP).split("://", 1)[1]
        function: Any = getattr(iampool, entry)
        with pytest.raises(TlsNotOfferedError, match="did not offer TLS"):
            await function(dsn, aws_iam=driver.database.config, cache=cache)
        assert plain.secrets_seen_in_plaintext == ()
        assert plain.accepted == 0


async def test_closing_a_pool_leaves_no_task_and_no_connection_behind(
    driver: Driver, cache: CredentialCache
) -> None:
    before = asyncio.all_tasks()
    pool = await iampool.create_pool(
        driver.dsn, aws_iam=driver.database.config, min_size=2, max_size=4, cache=cache
    )
    async with driver.borrow(pool) as connection:
        assert await driver.current_user(connection) == APP
    await driver.close_pool(pool)

    await wait_gateway_idle(driver.gateway)
    assert asyncio.all_tasks() <= before | {asyncio.current_task()}
