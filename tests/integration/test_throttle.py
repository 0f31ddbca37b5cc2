"""Throttled logins through the gateway's emulation of the services' throttles.

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
import pytest

import iampool
from iampool import AuthTokenRejected, ConnectThrottled, CredentialCache
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
            dsn_for(scheme, dsql.dsn), aws_iam=dsql.config, cache=caches[0], connect_timeout=1
        )

    assert not isinstance(caught.value, AuthTokenRejected)
    assert caught.value.tries >= 2
    assert "connection rate exceeded" in caught.value.server_message
    assert dsql.gateway.rejected == {"throttled": caught.value.tries}
    assert dsql.gateway.accepted == 0
    assert caches[0].stats()["tokens_signed"] == 1


@pytest.mark.parametrize("scheme", RDS_DRIVERS)
async def test_rds_logins_reusing_one_token_are_not_throttled(
    rds: IamDatabase, caches: list[CredentialCache], scheme: str
) -> None:
    dsn = dsn_for(scheme, rds.dsn)
    await throttled_from_now(dsn, rds, caches[:1], login_rate=1)

    connected = await connect_all(dsn, rds, [caches[0]] * 5)

    assert connected == 5
    assert rds.gateway.accepted == 5
    assert rds.gateway.rejected == {}  # five logins, one token: one authentication to count
    assert caches[0].stats()["tokens_signed"] == 1


@pytest.mark.parametrize("scheme", RDS_DRIVERS)
async def test_rds_distinct_tokens_over_the_throttle_are_retried_and_all_get_in(
    rds: IamDatabase, caches: list[CredentialCache], scheme: str
) -> None:
    dsn = dsn_for(scheme, rds.dsn)
    await throttled_from_now(dsn, rds, caches, login_rate=1)

    connected = await connect_all(dsn, rds, caches)  # three caches, three tokens

    assert connected == 3
    assert rds.gateway.accepted == 3
    assert rds.gateway.rejected["throttled"] >= 1
    assert set(rds.gateway.rejected) == {"throttled"}
    assert [cache.stats()["tokens_signed"] for cache in caches] == [1, 1, 1]
