"""create_pool / connect against the real PostgreSQL 15 and MariaDB 10.11 behind the IAM gateway.

Every test gets its own CredentialCache so AWS calls and signatures can be counted exactly; the
gateway and the AWS stand-in are session-wide (iampool.testing's pytest plugin).
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import anyio
import anyio.to_thread
import pytest

import iampool
from iampool import AuthTokenRejected, ConfigError, CredentialCache, TlsNotOfferedError
from iampool.testing import IamGateway
from tests.users import APP

pytestmark = pytest.mark.anyio

UPSTREAMS = {
    "postgresql": os.environ.get(
        "IAMPOOL_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
    ),
    "mysql": os.environ.get("IAMPOOL_TEST_MYSQL_DSN", "mysql://root@127.0.0.1:3306/test"),
}


@pytest.fixture(params=["postgresql", "mysql"])
def db(request: pytest.FixtureRequest) -> Any:
    """The gateway-fronted database of each engine, with its counters zeroed."""
    database = request.getfixturevalue(
        "iam_postgres" if request.param == "postgresql" else "iam_mysql"
    )
    database.gateway.reset_counters()
    return database


@pytest.fixture
async def cache() -> AsyncIterator[CredentialCache]:
    cache = CredentialCache()
    yield cache
    await cache.aclose()


def engine_of(db: Any) -> str:
    return str(db.dsn.split("://", 1)[0])


async def current_user(engine: str, connection: Any) -> str:
    """The user the server sees on a driver connection (MariaDB answers 'app@%')."""
    if engine == "postgresql":
        return str(await connection.fetchval("SELECT current_user"))
    async with connection.cursor() as cursor:
        await cursor.execute("SELECT CURRENT_USER()")
        (user,) = await cursor.fetchone()
    return str(user).split("@", 1)[0]


async def close_connection(engine: str, connection: Any) -> None:
    if engine == "postgresql":
        await connection.close()
    else:
        connection.close()


async def close_pool(engine: str, pool: Any) -> None:
    if engine == "postgresql":
        await pool.close()
    else:
        pool.close()
        await pool.wait_closed()


async def wait_gateway_idle(gateway: IamGateway) -> None:
    await anyio.to_thread.run_sync(gateway.wait_idle)


async def test_500_tasks_on_a_pool_of_20_share_one_assume_role_and_one_token(
    db: Any, cache: CredentialCache, fake_aws: Any
) -> None:
    engine = engine_of(db)
    assume_roles = fake_aws.calls["AssumeRole"]
    pool = await iampool.create_pool(
        db.dsn, aws_iam=db.config, min_size=0, max_size=20, cache=cache
    )
    users: list[str] = []
    peak = 0
    try:

        async def task() -> None:
            nonlocal peak
            async with pool.acquire() as connection:
                peak = max(peak, pool.get_size() if engine == "postgresql" else pool.size)
                users.append(await current_user(engine, connection))

        async with anyio.create_task_group() as group:
            for _ in range(500):
                group.start_soon(task)
    finally:
        await close_pool(engine, pool)

    assert Counter(users) == {db.user: 500}
    assert fake_aws.calls["AssumeRole"] - assume_roles == 1
    assert cache.stats()["sts_calls"] == 1
    assert cache.stats()["tokens_signed"] == 1
    assert peak <= 20
    assert 1 <= db.gateway.accepted <= 20  # every connection a TLS login the gateway verified
    assert db.gateway.rejected == Counter()
    await wait_gateway_idle(db.gateway)  # close() left no connection behind


async def test_connect_returns_a_driver_connection_logged_in_as_the_iam_user(
    db: Any, cache: CredentialCache
) -> None:
    engine = engine_of(db)
    connection = await iampool.connect(db.dsn, aws_iam=db.config, cache=cache)
    try:
        assert await current_user(engine, connection) == db.user
    finally:
        await close_connection(engine, connection)
    assert db.gateway.accepted == 1


async def test_a_rejected_token_is_retried_once_with_a_fresh_one(
    db: Any, cache: CredentialCache
) -> None:
    engine = engine_of(db)
    db.gateway.reject_next(1)
    connection = await iampool.connect(db.dsn, aws_iam=db.config, cache=cache)
    await close_connection(engine, connection)

    assert db.gateway.rejected == Counter({"forced": 1})
    assert db.gateway.accepted == 1
    assert cache.stats()["tokens_signed"] == 2  # the refused token was dropped and re-signed


async def test_a_token_refused_twice_raises_auth_token_rejected_without_the_token(
    db: Any, cache: CredentialCache
) -> None:
    db.gateway.reject_next(2)
    with pytest.raises(AuthTokenRejected) as caught:
        await iampool.connect(db.dsn, aws_iam=db.config, cache=cache)

    expected = "PAM authentication failed" if engine_of(db) == "postgresql" else "Access denied"
    assert expected in caught.value.server_message
    assert caught.value.user == APP
    assert "X-Amz-Signature" not in str(caught.value)
    assert "X-Amz-Signature" not in repr(caught.value.__cause__)
    assert db.gateway.rejected == Counter({"forced": 2})


async def test_tokens_rotate_with_elapsed_time_not_with_connections(db: Any, fake_aws: Any) -> None:
    engine = engine_of(db)
    cache = CredentialCache(ttl=2, token_reuse=1, expiry_margin=0.2)
    # Recycle connections constantly so that new ones keep asking for credentials.
    recycle = {"max_queries": 5} if engine == "postgresql" else {"pool_recycle": 0}
    assume_roles = fake_aws.calls["AssumeRole"]
    pool = await iampool.create_pool(
        db.dsn, aws_iam=db.config, min_size=0, max_size=8, cache=cache, **recycle
    )
    started = time.monotonic()
    queries = 0
    try:

        async def worker() -> None:
            nonlocal queries
            # A loaded machine makes fewer queries per second: run on until there are enough
            # for the bounds below to mean something, which are then scaled by the time taken.
            while time.monotonic() - started < 4.5 or queries < 120:
                async with pool.acquire() as connection:
                    assert await current_user(engine, connection) == db.user
                queries += 1

        async with anyio.create_task_group() as group:
            for _ in range(16):
                group.start_soon(worker)
    finally:
        await close_pool(engine, pool)
        await cache.aclose()
    elapsed = time.monotonic() - started

    sts_calls = fake_aws.calls["AssumeRole"] - assume_roles
    stats = cache.stats()
    assert stats["errors"] == 0
    assert 2 <= sts_calls <= elapsed / 1 + 2  # refreshed about every ttl/2, never per connection
    assert 3 <= stats["tokens_signed"] <= elapsed / 0.5 + 2
    assert db.gateway.accepted > 4 * stats["tokens_signed"]  # many connections per token
    assert db.gateway.rejected == Counter()


async def test_verify_full_fails_against_a_ca_that_did_not_sign_the_server(
    db: Any, cache: CredentialCache
) -> None:
    system_ca = ssl.get_default_verify_paths().openssl_cafile
    query = urlencode({"sslmode": "verify-full", "sslrootcert": system_ca})
    dsn = f"{db.dsn.split('?', 1)[0]}?{query}"
    with pytest.raises(Exception) as caught:  # noqa: PT011 - asyncpg raises it, aiomysql wraps it
        await iampool.connect(dsn, aws_iam=db.config, cache=cache)
    error: BaseException | None = caught.value
    while error is not None and not isinstance(error, ssl.SSLCertVerificationError):
        error = error.__cause__
    assert isinstance(error, ssl.SSLCertVerificationError)
    assert db.gateway.accepted == 0


async def test_sslmode_disable_is_refused_before_any_aws_call(
    db: Any, cache: CredentialCache
) -> None:
    dsn = db.dsn.replace("sslmode=verify-full", "sslmode=disable")
    with pytest.raises(ConfigError, match="sslmode"):
        await iampool.connect(dsn, aws_iam=db.config, cache=cache)
    assert cache.stats()["sts_calls"] == 0


@pytest.mark.parametrize("protocol", ["postgresql", "mysql"])
async def test_a_server_not_offering_tls_never_receives_the_token(
    protocol: str, fake_aws: Any, cache: CredentialCache, request: pytest.FixtureRequest
) -> None:
    db = request.getfixturevalue("iam_postgres" if protocol == "postgresql" else "iam_mysql")
    with IamGateway(
        protocol,  # type: ignore[arg-type]
        upstream=UPSTREAMS[protocol],
        authority=fake_aws,
        offer_tls=False,
    ) as plain:
        dsn = plain.dsn(APP)
        with pytest.raises(TlsNotOfferedError, match="did not offer TLS"):
            await iampool.connect(dsn, aws_iam=db.config, cache=cache)
        assert plain.secrets_seen_in_plaintext == ()
        assert plain.accepted == 0


async def test_asyncpg_keyword_arguments_reach_the_real_pool(
    iam_postgres: Any, cache: CredentialCache
) -> None:
    initialised = 0

    async def init(connection: Any) -> None:
        nonlocal initialised
        initialised += 1

    pool = await iampool.create_pool(
        iam_postgres.dsn,
        aws_iam=iam_postgres.config,
        cache=cache,
        min_size=2,
        max_size=2,
        init=init,
        statement_cache_size=0,
        command_timeout=5,
    )
    try:
        import asyncpg

        assert isinstance(pool, asyncpg.Pool)
        assert await pool.fetchval("SELECT 1") == 1
    finally:
        await pool.close()
    assert initialised == 2


async def test_closing_a_pool_leaves_no_task_behind(db: Any, cache: CredentialCache) -> None:
    engine = engine_of(db)
    before = asyncio.all_tasks()
    pool = await iampool.create_pool(db.dsn, aws_iam=db.config, min_size=2, max_size=4, cache=cache)
    async with pool.acquire() as connection:
        assert await current_user(engine, connection) == db.user
    await close_pool(engine, pool)
    await wait_gateway_idle(db.gateway)
    assert asyncio.all_tasks() <= before | {asyncio.current_task()}
