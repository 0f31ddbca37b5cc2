"""Aurora DSQL through the DSQL-mode gateway (iam_dsql), with asyncpg and psycopg.

The gateway verifies DSQL tokens like DSQL: service ``dsql``, ``DbConnectAdmin`` for the admin
role, signed for its host by credentials the AWS stand-in issued, unexpired.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import anyio
import anyio.to_thread
import pytest

import iampool
from iampool import AuthTokenRejected, CredentialCache, TlsNotOfferedError
from iampool.testing import IamDatabase, IamGateway

pytestmark = pytest.mark.anyio

SCHEMES = ["postgresql", "postgresql+psycopg"]


@pytest.fixture
def dsql(iam_dsql: IamDatabase) -> IamDatabase:
    iam_dsql.gateway.reset_counters()
    return iam_dsql


@pytest.fixture
async def cache() -> AsyncIterator[CredentialCache]:
    cache = CredentialCache()
    yield cache
    await cache.aclose()


def dsn_for(scheme: str, dsn: str) -> str:
    return f"{scheme}://{dsn.split('://', 1)[1]}"


async def current_user(scheme: str, connection: Any) -> str:
    if scheme == "postgresql":
        return str(await connection.fetchval("SELECT current_user"))
    cursor = await connection.execute("SELECT current_user")
    (user,) = await cursor.fetchone()
    return str(user)


def borrow(scheme: str, pool: Any) -> Any:
    return pool.acquire() if scheme == "postgresql" else pool.connection()


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_500_tasks_on_a_pool_of_20_share_one_assume_role_and_one_admin_token(
    dsql: IamDatabase, cache: CredentialCache, fake_aws: Any, scheme: str
) -> None:
    assume_roles = fake_aws.calls["AssumeRole"]
    pool = await iampool.create_pool(
        dsn_for(scheme, dsql.dsn), aws_iam=dsql.config, min_size=0, max_size=20, cache=cache
    )
    users: list[str] = []
    try:

        async def task() -> None:
            async with borrow(scheme, pool) as connection:
                users.append(await current_user(scheme, connection))

        async with anyio.create_task_group() as group:
            for _ in range(500):
                group.start_soon(task)
    finally:
        await pool.close()

    assert Counter(users) == {"admin": 500}
    assert fake_aws.calls["AssumeRole"] - assume_roles == 1
    assert (cache.stats()["sts_calls"], cache.stats()["tokens_signed"]) == (1, 1)
    assert 1 <= dsql.gateway.accepted <= 20
    assert dsql.gateway.rejected == Counter()
    await anyio.to_thread.run_sync(dsql.gateway.wait_idle)


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_a_non_admin_role_gets_a_db_connect_token_the_gateway_accepts(
    dsql: IamDatabase, cache: CredentialCache, scheme: str
) -> None:
    await anyio.to_thread.run_sync(dsql.gateway.ensure_user, "reporting")
    config = iampool.AwsIamConfig.from_extra({**dsql.config.to_dict(), "db_username": "reporting"})
    dsn = dsn_for(scheme, dsql.gateway.dsn("reporting"))

    connection = await iampool.connect(dsn, aws_iam=config, cache=cache)
    try:
        assert await current_user(scheme, connection) == "reporting"
    finally:
        await connection.close()
    assert dsql.gateway.accepted == 1


async def test_an_rds_token_is_refused_by_a_dsql_endpoint(
    dsql: IamDatabase, cache: CredentialCache
) -> None:
    rds_block = {k: v for k, v in dsql.config.to_dict().items() if k != "dsql"}
    with pytest.raises(AuthTokenRejected):
        await iampool.connect(dsql.dsn, aws_iam=rds_block, cache=cache)

    assert dsql.gateway.rejected == Counter({"malformed_token": 2})


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_a_rejected_token_is_retried_once_then_auth_token_rejected(
    dsql: IamDatabase, cache: CredentialCache, scheme: str
) -> None:
    dsn = dsn_for(scheme, dsql.dsn)
    dsql.gateway.reject_next(1)
    connection = await iampool.connect(dsn, aws_iam=dsql.config, cache=cache)
    await connection.close()
    assert cache.stats()["tokens_signed"] == 2

    dsql.gateway.reject_next(2)
    with pytest.raises(AuthTokenRejected) as caught:
        await iampool.connect(dsn, aws_iam=dsql.config, cache=cache)
    assert "X-Amz-Signature" not in str(caught.value)
    assert dsql.gateway.rejected == Counter({"forced": 3})


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_verify_full_fails_against_a_ca_that_did_not_sign_the_server(
    dsql: IamDatabase, cache: CredentialCache, scheme: str
) -> None:
    # No sslrootcert: DSQL's default, verify-full against the system trust store, which did not
    # sign the gateway's certificate.
    dsn = dsn_for(scheme, dsql.dsn.split("?", 1)[0])
    with pytest.raises(Exception) as caught:  # noqa: PT011 - each driver raises its own
        await iampool.connect(dsn, aws_iam=dsql.config, cache=cache)

    chain = []
    error: BaseException | None = caught.value
    while error is not None:
        chain.append(error)
        error = error.__cause__
    assert any(
        isinstance(error, ssl.SSLCertVerificationError) or "certificate verify failed" in str(error)
        for error in chain
    )
    assert dsql.gateway.accepted == 0


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_a_server_not_offering_tls_never_receives_the_token(
    dsql: IamDatabase, cache: CredentialCache, fake_aws: Any, scheme: str
) -> None:
    with IamGateway(
        "postgresql",
        upstream=os.environ.get(
            "IAMPOOL_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        authority=fake_aws,
        mode="dsql",
        offer_tls=False,
    ) as plain:
        query = urlencode({"sslmode": "require"})
        dsn = f"{scheme}://admin@{plain.endpoint}/postgres?{query}"
        with pytest.raises(TlsNotOfferedError):
            await iampool.connect(dsn, aws_iam=dsql.config, cache=cache)
        assert plain.secrets_seen_in_plaintext == ()


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_closing_a_pool_leaves_nothing_behind(
    dsql: IamDatabase, cache: CredentialCache, scheme: str
) -> None:
    before = asyncio.all_tasks()
    pool = await iampool.create_pool(
        dsn_for(scheme, dsql.dsn), aws_iam=dsql.config, min_size=2, max_size=4, cache=cache
    )
    async with borrow(scheme, pool) as connection:
        assert await current_user(scheme, connection) == "admin"
    await pool.close()
    await anyio.to_thread.run_sync(dsql.gateway.wait_idle)
    assert asyncio.all_tasks() <= before | {asyncio.current_task()}
