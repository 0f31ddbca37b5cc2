"""Issue 8, scenarios 4 and 5: the database side fails, the pools carry on.

4. The database restarts (its IAM gateway stops, dropping every connection, and starts again on
   the same endpoint): acquires fail while it is down, the pool then opens new connections with
   valid tokens on its own, and nothing leaks.
5. The database's clock is skewed: a token refused once is retried with a fresh one; refused
   twice, the caller gets ``AuthTokenRejected`` with the server's message.

Each test runs its own gateway (the session fixtures' gateways keep serving other tests) in
front of the machine's real PostgreSQL and MariaDB, which are never stopped.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import anyio.to_thread
import asyncpg
import pymysql
import pytest

import iampool
from iampool import AuthTokenRejected, CredentialCache
from iampool.testing import FakeAws, IamDatabase, IamGateway
from tests.users import APP

pytestmark = pytest.mark.anyio

log = logging.getLogger("reliability")  # measured counts; --log-cli-level=INFO shows them

UPSTREAMS = {
    "postgresql": os.environ.get(
        "IAMPOOL_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
    ),
    "mysql": os.environ.get("IAMPOOL_TEST_MYSQL_DSN", "mysql://root@127.0.0.1:3306/test"),
}
# What a query or an acquire raises while the server is away: the socket is refused or reset.
CONNECTION_ERRORS = (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError)
MYSQL_CONNECTION_LOST = 2013  # "Lost connection to MySQL server during query"
MYSQL_CANNOT_CONNECT = 2003  # "Can't connect to MySQL server"


@pytest.fixture(params=["postgresql", "mysql"])
def protocol(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database(protocol: str, request: pytest.FixtureRequest) -> IamDatabase:
    """The session database of the engine: its role, and its login user on the real server."""
    fixture = "iam_postgres" if protocol == "postgresql" else "iam_mysql"
    database: IamDatabase = request.getfixturevalue(fixture)
    return database


@pytest.fixture
async def cache() -> AsyncIterator[CredentialCache]:
    cache = CredentialCache()
    yield cache
    await cache.aclose()


def free_port() -> int:
    """A port nothing listens on now, to give a gateway a fixed endpoint across restarts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def own_gateway(protocol: str, fake_aws: FakeAws) -> Iterator[Callable[..., IamGateway]]:
    """Starts gateways for this test only, and stops them afterwards."""
    started: list[IamGateway] = []

    def start(**options: Any) -> IamGateway:
        gateway = IamGateway(
            protocol,  # type: ignore[arg-type]
            upstream=UPSTREAMS[protocol],
            authority=fake_aws,
            **options,
        )
        started.append(gateway.start())
        gateway.ensure_user(APP)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


async def select_one(protocol: str, connection: Any) -> int:
    if protocol == "postgresql":
        return int(await connection.fetchval("SELECT 1"))
    async with connection.cursor() as cursor:
        await cursor.execute("SELECT 1")
        (value,) = await cursor.fetchone()
    return int(value)


async def query_through(protocol: str, pool: Any) -> int:
    async with pool.acquire() as connection:
        return await select_one(protocol, connection)


def pool_size(protocol: str, pool: Any) -> int:
    return int(pool.get_size() if protocol == "postgresql" else pool.size)


async def close_pool(protocol: str, pool: Any) -> None:
    if protocol == "postgresql":
        await pool.close()
    else:
        pool.close()
        await pool.wait_closed()


def mysql_error_code(error: BaseException) -> int | None:
    if isinstance(error, pymysql.err.OperationalError) and error.args:
        return int(error.args[0])
    return None


# -- 4. database restart -------------------------------------------------------------------------


async def test_a_pool_recovers_from_a_database_restart_with_fresh_tokens_and_leaks_nothing(
    protocol: str, database: IamDatabase, own_gateway: Callable[..., IamGateway]
) -> None:
    shift = 0.0  # how far the credential cache's clock has moved past real time
    cache = CredentialCache(clock=lambda: time.time() + shift)
    gateway = own_gateway(port=free_port())
    endpoint = gateway.endpoint
    pool = await iampool.create_pool(
        gateway.dsn(APP), aws_iam=database.config, min_size=2, max_size=4, cache=cache
    )
    failures: list[str] = []
    try:
        in_use = await pool.acquire()  # a connection busy while the server goes away
        assert await select_one(protocol, in_use) == 1
        accepted_before = gateway.accepted
        assert accepted_before >= 2

        await anyio.to_thread.run_sync(gateway.stop)
        assert (gateway.active, gateway.upstream_active) == (0, 0)  # every connection dropped

        # While the server is down: a query on the busy connection and a new acquire both fail
        # with connection errors (refused for the acquire), never an IAM error.
        with pytest.raises((*CONNECTION_ERRORS, pymysql.err.OperationalError)) as lost:
            await select_one(protocol, in_use)
        if protocol == "mysql":
            assert mysql_error_code(lost.value) == MYSQL_CONNECTION_LOST
        else:  # asyncpg took the dead connection back from the proxy when the socket closed
            assert isinstance(lost.value, asyncpg.InterfaceError)
        await pool.release(in_use)
        with pytest.raises((*CONNECTION_ERRORS, pymysql.err.OperationalError)) as refused:
            await query_through(protocol, pool)
        if protocol == "mysql":
            assert mysql_error_code(refused.value) == MYSQL_CANNOT_CONNECT
        else:
            assert isinstance(refused.value, ConnectionRefusedError)
        # A refused socket is not a refused token: it is kept, and AWS is not called again.
        assert (cache.stats()["sts_calls"], cache.stats()["tokens_signed"]) == (1, 1)

        shift = 20 * 60.0  # the outage outlasted the cached token (600 s) and AWS credentials
        await anyio.to_thread.run_sync(gateway.start)
        assert gateway.endpoint == endpoint  # same host:port, same certificate

        results: list[int] = []
        peak = 0

        async def client() -> None:
            nonlocal peak
            try:
                results.append(await query_through(protocol, pool))
            except Exception as exc:  # counted: the promise is zero failures after the restart
                failures.append(type(exc).__name__)
            peak = max(peak, pool_size(protocol, pool))

        async with anyio.create_task_group() as group:
            for _ in range(40):
                group.start_soon(client)
    finally:
        await close_pool(protocol, pool)
        await cache.aclose()

    stats = cache.stats()
    log.info(
        "scenario 4 (%s restart): %d logins before, %d after; %d of 40 queries after the "
        "restart failed; AssumeRole %d, tokens signed %d; peak pool size %d",
        protocol, accepted_before, gateway.accepted - accepted_before, len(failures),
        stats["sts_calls"], stats["tokens_signed"], peak,
    )  # fmt: skip
    assert failures == []
    assert results == [1] * 40
    assert peak <= 4
    assert gateway.accepted > accepted_before  # new connections logged in after the restart
    assert gateway.rejected == Counter()  # ... with tokens the gateway accepted
    assert (stats["sts_calls"], stats["tokens_signed"]) == (2, 2)  # re-minted after the outage
    assert stats["errors"] == 0
    await anyio.to_thread.run_sync(gateway.wait_idle)  # close() left no connection open


async def test_idle_connections_dropped_by_a_restart_are_replaced_without_an_error(
    protocol: str,
    database: IamDatabase,
    own_gateway: Callable[..., IamGateway],
    cache: CredentialCache,
) -> None:
    gateway = own_gateway(port=free_port())
    pool = await iampool.create_pool(
        gateway.dsn(APP), aws_iam=database.config, min_size=3, max_size=3, cache=cache
    )
    try:
        assert await query_through(protocol, pool) == 1
        accepted_before = gateway.accepted

        await anyio.to_thread.run_sync(gateway.stop)
        await anyio.to_thread.run_sync(gateway.start)

        # Every idle connection is dead; the pool notices before handing one out.
        assert [await query_through(protocol, pool) for _ in range(6)] == [1] * 6
        log.info(
            "scenario 4 (%s, 3 idle connections dropped): 6 of 6 queries answered, %d new logins",
            protocol, gateway.accepted - accepted_before,
        )  # fmt: skip
        assert gateway.accepted > accepted_before
    finally:
        await close_pool(protocol, pool)
    await anyio.to_thread.run_sync(gateway.wait_idle)


def test_a_gateway_restarted_on_its_port_keeps_its_certificate_and_counters(
    fake_aws: FakeAws, iam_postgres: IamDatabase
) -> None:
    gateway = IamGateway(
        "postgresql", upstream=UPSTREAMS["postgresql"], authority=fake_aws, port=free_port()
    )
    with gateway:
        endpoint, ca = gateway.endpoint, gateway.ca_path.read_bytes()
        gateway.refuse("malformed_packet")
    assert gateway.ca_path.exists()  # a client's sslrootcert stays valid while it is down
    with gateway:
        assert (gateway.endpoint, gateway.ca_path.read_bytes()) == (endpoint, ca)
        assert gateway.rejected == {"malformed_packet": 1}
    directory = gateway.ca_path.parent
    del gateway
    gc.collect()  # stopped serving tasks may still hold it in a reference cycle
    assert not directory.exists()  # the TLS files go with the gateway object


# -- 5. clock skew ---------------------------------------------------------------------------


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@pytest.mark.parametrize(
    ("skew", "reason"),
    [(timedelta(minutes=16), "expired"), (timedelta(minutes=-10), "not_yet_valid")],
    ids=["server-clock-ahead", "server-clock-behind"],
)
async def test_a_server_clock_skewed_past_token_validity_raises_auth_token_rejected(
    protocol: str,
    database: IamDatabase,
    own_gateway: Callable[..., IamGateway],
    cache: CredentialCache,
    skew: timedelta,
    reason: str,
) -> None:
    gateway = own_gateway(clock=lambda: utc_now() + skew)

    with pytest.raises(AuthTokenRejected) as caught:
        await iampool.connect(gateway.dsn(APP), aws_iam=database.config, cache=cache)

    log.info(
        "scenario 5 (%s, server clock %+d min): %s; rejected %s, accepted %d, tokens signed %d",
        protocol, skew // timedelta(minutes=1), type(caught.value).__name__,
        dict(gateway.rejected), gateway.accepted, cache.stats()["tokens_signed"],
    )  # fmt: skip
    expected = "PAM authentication failed" if protocol == "postgresql" else "Access denied"
    assert expected in caught.value.server_message
    assert "clock is in sync" in str(caught.value)  # the advice names the likely cause
    assert "X-Amz-Signature" not in str(caught.value)
    assert gateway.rejected == {reason: 2}  # the first token and a freshly signed one
    assert gateway.accepted == 0
    assert cache.stats()["tokens_signed"] == 2
    await anyio.to_thread.run_sync(gateway.wait_idle)


async def test_a_clock_skew_that_hits_only_the_first_login_is_absorbed_by_the_retry(
    protocol: str,
    database: IamDatabase,
    own_gateway: Callable[..., IamGateway],
    cache: CredentialCache,
) -> None:
    readings = 0

    def skewed_once() -> datetime:
        nonlocal readings
        readings += 1
        return utc_now() + (timedelta(minutes=16) if readings == 1 else timedelta(0))

    gateway = own_gateway(clock=skewed_once)
    pool = await iampool.create_pool(
        gateway.dsn(APP), aws_iam=database.config, min_size=1, max_size=2, cache=cache
    )
    try:
        assert await query_through(protocol, pool) == 1
    finally:
        await close_pool(protocol, pool)

    log.info(
        "scenario 5 (%s, skewed first login): rejected %s, accepted %d, tokens signed %d",
        protocol, dict(gateway.rejected), gateway.accepted, cache.stats()["tokens_signed"],
    )  # fmt: skip
    assert gateway.rejected == {"expired": 1}
    assert gateway.accepted == 1
    assert cache.stats()["tokens_signed"] == 2  # the refused token was dropped, not reused
    await anyio.to_thread.run_sync(gateway.wait_idle)
