"""The services' limits through the gateway's emulation of them: throttled logins, and Aurora
DSQL's session age, connection rate and optimistic-concurrency conflicts.

RDS refuses more than N distinct IAM tokens a second per instance ("too many competing
requests"; a reused token is not counted); Aurora DSQL more than N new connections a second per
cluster (SQLSTATE 53400). iampool tries a throttled login again with the same credentials,
backing off, within connect_timeout; then ConnectThrottled. Never a bad token.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import asyncpg
import pytest

import iampool
import iampool.dsql
from iampool import AuthTokenRejected, ConnectThrottled, CredentialCache
from iampool.pools import _plan
from iampool.testing import IamDatabase

pytestmark = pytest.mark.anyio

PG_DRIVERS = ["postgresql", "postgresql+psycopg"]
RDS_DRIVERS = [*PG_DRIVERS, "mysql+aiomysql"]


def dsn_for(scheme: str, dsn: str) -> str:
    return f"{scheme}://{dsn.split('://', 1)[1]}"


async def close(connection: Any) -> None:
    closed = connection.close()
    if inspect.isawaitable(closed):
        await closed


@pytest.fixture
def dsql(iam_dsql: IamDatabase) -> Iterator[IamDatabase]:
    iam_dsql.gateway.reset_counters()
    yield iam_dsql
    iam_dsql.gateway.limit(login_rate=None, session_lifetime=None)


@pytest.fixture
def rds(request: pytest.FixtureRequest, scheme: str) -> Iterator[IamDatabase]:
    database: IamDatabase = request.getfixturevalue(
        "iam_mysql" if scheme.startswith("mysql") else "iam_postgres"
    )
    database.gateway.reset_counters()
    yield database
    database.gateway.limit(login_rate=None, session_lifetime=None)


@pytest.fixture
async def caches() -> AsyncIterator[list[CredentialCache]]:
    made = [CredentialCache() for _ in range(3)]
    yield made
    for cache in made:
        await cache.aclose()


async def connect_all(dsn: str, database: IamDatabase, caches: list[CredentialCache]) -> int:
    """One login per cache, all at once; returns how many got in (each closed again)."""
    connected = 0

    async def one(cache: CredentialCache) -> None:
        nonlocal connected
        connection = await iampool.connect(dsn, aws_iam=database.config, cache=cache)
        connected += 1
        await close(connection)

    async with anyio.create_task_group() as group:
        for cache in caches:
            group.start_soon(one, cache)
    return connected


async def throttled_from_now(
    dsn: str, database: IamDatabase, caches: list[CredentialCache], login_rate: int
) -> None:
    """Mint each cache's credentials with a login before the throttle, so that the logins
    under test reach the gateway within the same second; then throttle, counters at zero."""
    for cache in caches:
        await close(await iampool.connect(dsn, aws_iam=database.config, cache=cache))
    database.gateway.limit(login_rate=login_rate, session_lifetime=None)
    database.gateway.reset_counters()


@pytest.mark.parametrize("scheme", PG_DRIVERS)
async def test_dsql_connections_over_the_clusters_rate_wait_their_turn_and_all_get_in(
    dsql: IamDatabase, caches: list[CredentialCache], scheme: str
) -> None:
    dsn = dsn_for(scheme, dsql.dsn)
    await throttled_from_now(dsn, dsql, caches[:1], login_rate=1)
    one_cache = [caches[0]] * 4  # one token for all four: DSQL counts connections, not tokens

    connected = await connect_all(dsn, dsql, one_cache)

    assert connected == 4
    assert dsql.gateway.accepted == 4
    assert dsql.gateway.rejected["throttled"] >= 1  # the cluster did throttle them
    assert set(dsql.gateway.rejected) == {"throttled"}  # and nothing else refused them
    assert caches[0].stats()["tokens_signed"] == 1  # never invalidated, never re-signed


@pytest.mark.parametrize("scheme", PG_DRIVERS)
async def test_dsql_still_throttled_when_connect_timeout_runs_out_is_connect_throttled(
    dsql: IamDatabase, caches: list[CredentialCache], scheme: str
) -> None:
    dsql.gateway.limit(login_rate=0, session_lifetime=None)

    with pytest.raises(ConnectThrottled) as caught:
        await iampool.connect(
            dsn_for(scheme, dsql.dsn), aws_iam=dsql.config, cache=caches[0], connect_timeout=3
        )  # 3 s: AssumeRole and a TLS handshake on a loaded machine leave room for tries

    assert not isinstance(caught.value, AuthTokenRejected)
    assert caught.value.tries >= 2
    assert "connection rate exceeded" in caught.value.server_message
    assert dsql.gateway.rejected == {"throttled": caught.value.tries}
    assert dsql.gateway.accepted == 0
    assert caches[0].stats()["tokens_signed"] == 1


@pytest.mark.parametrize("scheme", RDS_DRIVERS)
@pytest.mark.parametrize("tokens", [1, 3], ids=["one-token", "three-tokens"])
async def test_rds_throttles_distinct_tokens_not_logins_and_throttled_logins_get_in_later(
    rds: IamDatabase, caches: list[CredentialCache], scheme: str, tokens: int
) -> None:
    dsn = dsn_for(scheme, rds.dsn)
    await throttled_from_now(dsn, rds, caches[:tokens], login_rate=1)
    logins = caches if tokens == 3 else [caches[0]] * 5  # a cache signs one token

    connected = await connect_all(dsn, rds, logins)

    assert connected == rds.gateway.accepted == len(logins)
    # Five logins with one token: one authentication to count. Three tokens at once: over.
    rejected = rds.gateway.rejected
    assert (rejected.pop("throttled", 0) >= 1) == (tokens == 3)
    assert rejected == {}  # nothing else refused them
    assert [cache.stats()["tokens_signed"] for cache in caches[:tokens]] == [1] * tokens


# --- Aurora DSQL's limits ------------------------------------------------------------------


async def sleep_on(scheme: str, pool: Any, seconds: float) -> None:
    """Borrow a connection, keep it busy for ``seconds`` in one statement, give it back."""
    if scheme == "postgresql":
        async with pool.acquire() as connection:
            await connection.execute(f"SELECT pg_sleep({seconds})")
    else:
        async with pool.connection() as connection:
            await connection.execute(f"SELECT pg_sleep({seconds})")


async def test_a_dsql_plan_caps_the_connection_rate_and_the_age_by_default(
    dsql: IamDatabase, iam_postgres: IamDatabase, caches: list[CredentialCache]
) -> None:
    default = _plan.resolve(dsql.dsn, dsql.config, caches[0], pool=True)
    chosen = _plan.resolve(dsql.dsn, dsql.config, caches[0], pool=True, connect_rate=5)
    rds = _plan.resolve(iam_postgres.dsn, iam_postgres.config, caches[0], pool=True)

    assert default.dialer.rate is not None
    assert default.dialer.rate.rate == 100  # the cluster's limit
    assert default.max_lifetime == 3000  # under the hour, with room for a 5 minute transaction
    assert chosen.dialer.rate is not None
    assert chosen.dialer.rate.rate == 5  # the caller's choice wins
    assert rds.dialer.rate is None
    assert rds.max_lifetime is None


async def test_the_gateway_cuts_a_session_at_its_age(
    dsql: IamDatabase, caches: list[CredentialCache]
) -> None:
    dsql.gateway.limit(login_rate=None, session_lifetime=0.5)
    connection = await iampool.connect(dsql.dsn, aws_iam=dsql.config, cache=caches[0])
    try:
        assert await connection.fetchval("SELECT 1") == 1
        with pytest.raises((asyncpg.ConnectionDoesNotExistError, ConnectionError, OSError)):
            await connection.execute("SELECT pg_sleep(2)")  # cut at 0.5 s, mid-statement
    finally:
        connection.terminate()


@pytest.mark.parametrize("scheme", PG_DRIVERS)
async def test_dsql_pools_replace_connections_before_the_server_cuts_them(
    dsql: IamDatabase, caches: list[CredentialCache], scheme: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The hour and the 50 minutes, shrunk: sessions cut at 1.5 s, connections handed out up
    # to 0.4 s old. Each borrow keeps its connection busy 0.2 s; for 3 s, never a cut one.
    monkeypatch.setattr(_plan, "DSQL_MAX_LIFETIME", 0.4)
    dsql.gateway.limit(login_rate=None, session_lifetime=1.5)
    pool = await iampool.create_pool(
        dsn_for(scheme, dsql.dsn), aws_iam=dsql.config, min_size=1, max_size=1, cache=caches[0]
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
    dsql: IamDatabase, caches: list[CredentialCache]
) -> None:
    pool = await iampool.create_pool(
        dsql.dsn, aws_iam=dsql.config, min_size=2, max_size=2, cache=caches[0]
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
