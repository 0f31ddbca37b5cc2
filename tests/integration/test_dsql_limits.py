"""Aurora DSQL's limits through the DSQL-mode gateway: a session's hour (the gateway's
``session_lifetime``), the cluster's connection rate, optimistic-concurrency conflicts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import asyncpg
import pytest

import iampool
import iampool.dsql
from iampool import CredentialCache
from iampool.pools import _plan
from iampool.testing import IamDatabase

pytestmark = pytest.mark.anyio

SCHEMES = ["postgresql", "postgresql+psycopg"]


def dsn_for(scheme: str, dsn: str) -> str:
    return f"{scheme}://{dsn.split('://', 1)[1]}"


@pytest.fixture
def dsql(iam_dsql: IamDatabase) -> Iterator[IamDatabase]:
    iam_dsql.gateway.reset_counters()
    yield iam_dsql
    iam_dsql.gateway.limit(login_rate=None, session_lifetime=None)


@pytest.fixture
async def cache() -> AsyncIterator[CredentialCache]:
    cache = CredentialCache()
    yield cache
    await cache.aclose()


async def sleep_on(scheme: str, pool: Any, seconds: float) -> None:
    """Borrow a connection, keep it busy for ``seconds`` in one statement, give it back."""
    if scheme == "postgresql":
        async with pool.acquire() as connection:
            await connection.execute(f"SELECT pg_sleep({seconds})")
    else:
        async with pool.connection() as connection:
            await connection.execute(f"SELECT pg_sleep({seconds})")


async def test_a_dsql_plan_caps_the_connection_rate_and_the_age_by_default(
    dsql: IamDatabase, iam_postgres: IamDatabase, cache: CredentialCache
) -> None:
    default = _plan.resolve(dsql.dsn, dsql.config, cache, pool=True)
    chosen = _plan.resolve(dsql.dsn, dsql.config, cache, pool=True, connect_rate=5)
    rds = _plan.resolve(iam_postgres.dsn, iam_postgres.config, cache, pool=True)

    assert default.dialer.rate is not None
    assert default.dialer.rate.rate == 100  # the cluster's limit
    assert default.max_lifetime == 3000  # under the hour, with room for a 5 minute transaction
    assert chosen.dialer.rate is not None
    assert chosen.dialer.rate.rate == 5  # the caller's choice wins
    assert rds.dialer.rate is None
    assert rds.max_lifetime is None


async def test_the_gateway_cuts_a_session_at_its_age(
    dsql: IamDatabase, cache: CredentialCache
) -> None:
    dsql.gateway.limit(login_rate=None, session_lifetime=0.5)
    connection = await iampool.connect(dsql.dsn, aws_iam=dsql.config, cache=cache)
    try:
        assert await connection.fetchval("SELECT 1") == 1
        with pytest.raises((asyncpg.ConnectionDoesNotExistError, ConnectionError, OSError)):
            await connection.execute("SELECT pg_sleep(2)")  # cut at 0.5 s, mid-statement
    finally:
        connection.terminate()


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_dsql_pools_replace_connections_before_the_server_cuts_them(
    dsql: IamDatabase, cache: CredentialCache, scheme: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The hour and the 50 minutes, shrunk: sessions cut at 1.5 s, connections handed out up
    # to 0.4 s old. Each borrow keeps its connection busy 0.2 s; for 3 s, never a cut one.
    monkeypatch.setattr(_plan, "DSQL_MAX_LIFETIME", 0.4)
    dsql.gateway.limit(login_rate=None, session_lifetime=1.5)
    pool = await iampool.create_pool(
        dsn_for(scheme, dsql.dsn), aws_iam=dsql.config, min_size=1, max_size=1, cache=cache
    )
    borrows = 0
    try:
        with anyio.move_on_after(3.0):
            while True:
                await sleep_on(scheme, pool, 0.2)
                borrows += 1
    finally:
        await pool.close()

    assert borrows >= 5
    assert dsql.gateway.accepted >= 3  # the one connection was replaced along the way
    assert dsql.gateway.rejected == {}


async def test_retry_serialization_runs_a_conflicting_transaction_again(
    dsql: IamDatabase, cache: CredentialCache
) -> None:
    pool = await iampool.create_pool(
        dsql.dsn, aws_iam=dsql.config, min_size=2, max_size=2, cache=cache
    )
    runs = 0
    try:
        async with pool.acquire() as setup:
            await setup.execute(
                "DROP TABLE IF EXISTS iampool_occ; "
                "CREATE TABLE iampool_occ (id int PRIMARY KEY, n int); "
                "INSERT INTO iampool_occ VALUES (1, 0)"
            )

        async def increment() -> int:
            nonlocal runs
            runs += 1
            async with pool.acquire() as connection:
                async with connection.transaction(isolation="repeatable_read"):
                    n = await connection.fetchval("SELECT n FROM iampool_occ WHERE id = 1")
                    if runs == 1:  # another writer commits first: a conflict, as in DSQL
                        async with pool.acquire() as other:
                            await other.execute("UPDATE iampool_occ SET n = n + 100 WHERE id = 1")
                    await connection.execute("UPDATE iampool_occ SET n = $1 WHERE id = 1", n + 1)
                return int(n) + 1

        result = await iampool.dsql.retry_serialization(increment)
        async with pool.acquire() as check:
            final = await check.fetchval("SELECT n FROM iampool_occ WHERE id = 1")
            await check.execute("DROP TABLE iampool_occ")
    finally:
        await pool.close()

    assert runs == 2  # the first run hit SQLSTATE 40001 and was run again
    assert result == final == 101
