"""Redshift provisioned and Serverless through iampool, end to end.

redshift-connector talks to the IAM gateway in Redshift mode in front of the real PostgreSQL 15;
the passwords come from FakeAws (moto's GetClusterCredentials, the kit's Serverless
GetCredentials). Every test gets its own CredentialCache so AWS calls can be counted exactly.
"""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.to_thread
import pytest

import iampool
from iampool import (
    AuthTokenRejected,
    AwsIamConfig,
    ConfigError,
    CredentialCache,
    CredentialError,
    RedshiftConnection,
    RedshiftPool,
    TlsNotOfferedError,
)
from iampool.testing import FakeAws, IamDatabase, IamGateway
from tests.users import APP, IAM_APP

pytestmark = pytest.mark.anyio

UPSTREAM = os.environ.get("IAMPOOL_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
WORKGROUP = "iampool-serverless"
DISCOVERED_CLUSTER = "iampool-discovered"


class ShiftedClock:
    """The wall clock plus an offset the test moves: the cache sees time pass, AWS does not."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
async def cache() -> AsyncIterator[CredentialCache]:
    cache = CredentialCache()
    yield cache
    await cache.aclose()


@pytest.fixture
def redshift(iam_redshift: IamDatabase) -> IamDatabase:
    """The session's Redshift-mode gateway with its counters zeroed."""
    iam_redshift.gateway.reset_counters()
    return iam_redshift


def calls_since(fake_aws: FakeAws, before: Counter[str]) -> Counter[str]:
    """The AWS calls made since ``before = Counter(fake_aws.calls)``, by API."""
    return Counter({api: count - before[api] for api, count in fake_aws.calls.items()}) - Counter()


@pytest.fixture(scope="module")
def serverless(iam_redshift: IamDatabase, fake_aws: FakeAws) -> IamDatabase:
    """A Serverless workgroup whose endpoint is the gateway; the login user GetCredentials
    returns for the fixture's role (``IAMR:<role>``) exists on the server."""
    gateway = iam_redshift.gateway
    database = iam_redshift.config.db_name
    assert database is not None
    fake_aws.create_workgroup(WORKGROUP, db_name=database, address=gateway.host, port=gateway.port)
    role_arn = iam_redshift.config.role_arn
    assert role_arn is not None
    login = "IAMR:" + role_arn.rsplit("/", 1)[-1]
    gateway.ensure_user(login)
    config = AwsIamConfig.from_extra(
        {
            "enabled": True,
            "region": fake_aws.region,
            "role_arn": role_arn,
            "workgroup_name": WORKGROUP,
            "db_name": database,
        }
    )
    return IamDatabase(
        dsn=f"redshift://{gateway.endpoint}/{database}?sslmode=verify-full",
        config=config,
        gateway=gateway,
        ca_path=iam_redshift.ca_path,
        user=login,
    )


def with_fields(config: AwsIamConfig, **changes: Any) -> AwsIamConfig:
    """The same block with some fields changed (``None`` removes one), validated again."""
    block = {**config.to_dict(), **changes}
    return AwsIamConfig.from_extra(
        {name: value for name, value in block.items() if value is not None}
    )


def hostless(dsn: str) -> str:
    """``redshift://user@host:port/db?...`` without user, host and port: discover the endpoint."""
    scheme, rest = dsn.split("://", 1)
    return f"{scheme}:///{rest.split('/', 1)[1]}"


def driver_threads() -> int:
    """Threads RedshiftPools started under asyncio (each driver call runs in one of them)."""
    return sum(thread.name.startswith("iampool-redshift-") for thread in threading.enumerate())


def open_sockets_to(port: int) -> list[socket.socket]:
    """This process's sockets still open to ``port``: reachable, or waiting for the GC."""
    found = []
    for item in gc.get_objects():
        if (
            isinstance(item, socket.socket)
            and item.family in (socket.AF_INET, socket.AF_INET6)
            and item.fileno() != -1
        ):
            with contextlib.suppress(OSError):  # not connected
                if item.getpeername()[1] == port:
                    found.append(item)
    return found


async def wait_idle(gateway: IamGateway) -> None:
    await anyio.to_thread.run_sync(gateway.wait_idle)


# -- provisioned clusters ---------------------------------------------------------------------


async def test_200_tasks_on_a_pool_of_10_share_one_assume_role_and_one_cluster_password(
    redshift: IamDatabase, fake_aws: FakeAws, cache: CredentialCache
) -> None:
    before = Counter(fake_aws.calls)
    workers_before = driver_threads()
    pool = await iampool.create_pool(
        redshift.dsn, aws_iam=redshift.config, max_size=10, cache=cache
    )
    assert isinstance(pool, RedshiftPool)
    users: list[str] = []
    peak_size = peak_workers = 0
    try:

        async def task() -> None:
            nonlocal peak_size, peak_workers
            async with pool.acquire() as connection:
                peak_size = max(peak_size, pool.get_size())
                users.append(await connection.fetchval("SELECT current_user"))
                peak_workers = max(peak_workers, driver_threads() - workers_before)

        async with anyio.create_task_group() as group:
            for _ in range(200):
                group.start_soon(task)
    finally:
        await pool.close()

    assert Counter(users) == {IAM_APP: 200}  # the DbUser GetClusterCredentials returned
    assert calls_since(fake_aws, before) == {"AssumeRole": 1, "GetClusterCredentials": 1}
    stats = cache.stats()
    assert (stats["sts_calls"], stats["api_calls"], stats["errors"]) == (1, 1, 0)
    assert peak_size <= 10
    assert 1 <= peak_workers <= 10  # the pool's own threads never outnumber its connections
    assert driver_threads() == workers_before  # close() waited for them to exit
    assert 1 <= redshift.gateway.accepted <= 10
    assert redshift.gateway.rejected == Counter()
    await wait_idle(redshift.gateway)


async def test_duration_seconds_is_sent_explicitly_and_equals_password_duration(
    redshift: IamDatabase, fake_aws: FakeAws, cache: CredentialCache
) -> None:
    config = with_fields(redshift.config, password_duration=1800)

    credentials = await iampool.auth_for(config, cache=cache).credentials()

    request = fake_aws.requests["GetClusterCredentials"][-1]
    assert request["DurationSeconds"] == "1800"
    assert request["DbUser"] == APP
    assert request["DbName"] == config.db_name
    assert request["ClusterIdentifier"] == config.cluster_identifier
    assert request["AutoCreate"] == "false"
    assert not any(name.startswith("DbGroups") for name in request)
    remaining = (credentials.expires_at.timestamp() - time.time()) / 60
    assert 29 < remaining <= 30


async def test_auto_create_and_db_groups_are_passed_and_the_returned_user_logs_in(
    redshift: IamDatabase, fake_aws: FakeAws, cache: CredentialCache
) -> None:
    config = with_fields(redshift.config, auto_create=True, db_groups=["analysts", "etl"])
    redshift.gateway.ensure_user(f"IAMA:{APP}")  # what GetClusterCredentials names it (moto)

    connection = await iampool.connect(redshift.dsn, aws_iam=config, cache=cache)
    try:
        user = await connection.fetchval("SELECT current_user")
    finally:
        connection.close()

    request = fake_aws.requests["GetClusterCredentials"][-1]
    assert request["AutoCreate"] == "true"
    assert (request["DbGroups.DbGroup.1"], request["DbGroups.DbGroup.2"]) == ("analysts", "etl")
    assert user == f"IAMA:{APP}"


async def test_without_a_host_the_endpoint_comes_from_describe_clusters_once(
    redshift: IamDatabase, fake_aws: FakeAws, cache: CredentialCache
) -> None:
    gateway = redshift.gateway
    fake_aws.create_redshift_cluster(
        DISCOVERED_CLUSTER,
        db_name=redshift.config.db_name or "dev",
        address=gateway.host,
        port=gateway.port,
    )
    config = with_fields(redshift.config, cluster_identifier=DISCOVERED_CLUSTER)
    dsn = hostless(redshift.dsn)
    assert dsn.startswith("redshift:///")
    before = Counter(fake_aws.calls)

    pool = await iampool.create_pool(dsn, aws_iam=config, min_size=0, max_size=4, cache=cache)
    try:
        async with anyio.create_task_group() as group:
            for _ in range(20):
                group.start_soon(pool.fetchval, "SELECT 1")
        credentials = await iampool.auth_for(config, port=5439, cache=cache).credentials()
        assert await pool.fetchval("SELECT current_user") == IAM_APP
    finally:
        await pool.close()

    assert (credentials.host, credentials.port) == (gateway.host, gateway.port)
    assert calls_since(fake_aws, before) == {
        "AssumeRole": 1,
        "GetClusterCredentials": 1,
        "DescribeClusters": 1,
    }
    assert gateway.accepted >= 1
    assert gateway.rejected == Counter()


async def test_an_expired_password_is_replaced_for_new_connections_and_open_ones_keep_working(
    redshift: IamDatabase, fake_aws: FakeAws
) -> None:
    clock = ShiftedClock()
    cache = CredentialCache(clock=clock)
    auth = iampool.auth_for(
        redshift.config, host=redshift.gateway.host, port=redshift.gateway.port, cache=cache
    )
    before = Counter(fake_aws.calls)
    pool = await iampool.create_pool(
        redshift.dsn, aws_iam=redshift.config, min_size=0, max_size=2, cache=cache
    )
    try:
        async with pool.acquire() as first:
            assert await first.fetchval("SELECT 1") == 1
            old = await auth.credentials()  # the pool's entry: same configuration and endpoint

            # 850 s on: past the 900 s password's usable end (Expiration - 60 s). Not further:
            # FakeAws stamps Expiration with the real clock, so the next password must still
            # look valid to the shifted cache (50 s left: usable ~37 s, refreshed after ~18 s).
            clock.offset += redshift.config.password_duration - 50

            async with pool.acquire() as second:  # a new connection: needs credentials
                assert await second.fetchval("SELECT current_user") == IAM_APP
            new = await auth.credentials()
            assert await first.fetchval("SELECT 2") == 2  # rotation never touches it
    finally:
        await pool.close()
        await cache.aclose()

    assert new.password != old.password
    assert new.expires_at >= old.expires_at
    assert calls_since(fake_aws, before) == {"AssumeRole": 2, "GetClusterCredentials": 2}
    assert redshift.gateway.accepted == 2
    assert redshift.gateway.rejected == Counter()


async def test_inside_the_refresh_margin_callers_keep_the_password_while_one_refresh_runs(
    redshift: IamDatabase, fake_aws: FakeAws
) -> None:
    clock = ShiftedClock()
    cache = CredentialCache(clock=clock)
    auth = iampool.auth_for(redshift.config, host="127.0.0.1", port=1, cache=cache)
    try:
        current = await auth.credentials()
        minted = fake_aws.calls["GetClusterCredentials"]
        # 900 s passwords are usable until 60 s before Expiration and refreshed 60 s before that
        clock.offset += redshift.config.password_duration - 100

        served = [await auth.credentials() for _ in range(50)]
        await anyio.to_thread.run_sync(fake_aws.wait_for_calls, "GetClusterCredentials", minted + 1)
        with anyio.fail_after(5):  # the refresh lands on the cache's thread: poll for it
            while (renewed := await auth.credentials()).password == current.password:  # noqa: ASYNC110
                await anyio.sleep(0.01)
    finally:
        await cache.aclose()

    assert {credentials.password for credentials in served} == {current.password}
    assert renewed.expires_at >= current.expires_at
    assert fake_aws.calls["GetClusterCredentials"] == minted + 1
    assert cache.stats()["refreshes"] == 1


# -- Redshift Serverless ----------------------------------------------------------------------


async def test_serverless_pool_logs_in_as_the_role_user_get_credentials_returned(
    serverless: IamDatabase, fake_aws: FakeAws, cache: CredentialCache
) -> None:
    serverless.gateway.reset_counters()
    before = Counter(fake_aws.calls)
    pool = await iampool.create_pool(
        serverless.dsn, aws_iam=serverless.config, max_size=10, cache=cache
    )
    users: list[str] = []
    try:

        async def task() -> None:
            users.append(await pool.fetchval("SELECT current_user"))

        async with anyio.create_task_group() as group:
            for _ in range(200):
                group.start_soon(task)
    finally:
        await pool.close()

    assert Counter(users) == {serverless.user: 200}
    assert calls_since(fake_aws, before) == {"AssumeRole": 1, "GetCredentials": 1}
    request = fake_aws.requests["GetCredentials"][-1]
    assert request == {
        "workgroupName": WORKGROUP,
        "dbName": serverless.config.db_name,
        "durationSeconds": 900,
    }
    assert 1 <= serverless.gateway.accepted <= 10
    assert serverless.gateway.rejected == Counter()
    await wait_idle(serverless.gateway)


async def test_serverless_without_a_host_finds_the_endpoint_with_get_workgroup_once(
    serverless: IamDatabase, fake_aws: FakeAws, cache: CredentialCache
) -> None:
    before = Counter(fake_aws.calls)
    pool = await iampool.create_pool(
        hostless(serverless.dsn), aws_iam=serverless.config, min_size=0, max_size=3, cache=cache
    )
    try:
        async with anyio.create_task_group() as group:
            for _ in range(12):
                group.start_soon(pool.fetchval, "SELECT 1")
        assert await pool.fetchval("SELECT current_user") == serverless.user
    finally:
        await pool.close()

    assert calls_since(fake_aws, before) == {
        "AssumeRole": 1,
        "GetCredentials": 1,
        "GetWorkgroup": 1,
    }


# -- AWS failures -------------------------------------------------------------------------------


FAILURES = {
    # id: (backend, what goes wrong, AWS error code)
    "cluster-not-found": ("cluster", "unknown", "ClusterNotFound"),
    "cluster-access-denied": ("cluster", "access_denied", "AccessDenied"),
    "cluster-throttled": ("cluster", "throttle", "Throttling"),
    "workgroup-not-found": ("workgroup", "unknown", "ResourceNotFoundException"),
    "workgroup-access-denied": ("workgroup", "access_denied", "AccessDeniedException"),
    "workgroup-throttled": ("workgroup", "throttle", "ThrottlingException"),
}


@pytest.mark.parametrize("with_host", [True, False], ids=["host", "discovery"])
@pytest.mark.parametrize(("backend", "failure", "code"), FAILURES.values(), ids=FAILURES)
async def test_api_errors_raise_credential_error_naming_the_target_and_the_aws_code(
    backend: str,
    failure: str,
    code: str,
    with_host: bool,
    redshift: IamDatabase,
    serverless: IamDatabase,
    fake_aws: FakeAws,
) -> None:
    database = redshift if backend == "cluster" else serverless
    api = "GetClusterCredentials" if backend == "cluster" else "GetCredentials"
    selector = "cluster_identifier" if backend == "cluster" else "workgroup_name"
    name = database.config.cluster_identifier or database.config.workgroup_name
    if failure == "unknown":
        name = "no-such-" + backend
        config = with_fields(database.config, **{selector: name})
    else:
        config = database.config
        getattr(fake_aws.faults, failure)(api, times=1)
    dsn = database.dsn if with_host else hostless(database.dsn)
    cache = CredentialCache(max_attempts=1)  # botocore would retry a throttled call
    before = Counter(fake_aws.calls)
    try:
        with pytest.raises(CredentialError) as caught:
            await iampool.connect(dsn, aws_iam=config, cache=cache)
    finally:
        await cache.aclose()

    deployment = "cluster" if backend == "cluster" else "Serverless"
    message = str(caught.value)
    assert message.startswith(f"Failed to get Redshift {deployment} credentials for {backend}")
    assert f"{backend} {name} in us-east-1" in message
    assert code in message
    assert (caught.value.code, caught.value.target) == (code, f"for {backend} {name} in us-east-1")
    assert calls_since(fake_aws, before)[api] == 1
    assert fake_aws.faults.pending(api) == 0
    assert database.gateway.accepted == 0


@pytest.mark.parametrize("seconds", [0, 899, 3601, 43200])
async def test_password_duration_outside_900_to_3600_is_a_config_error(
    seconds: int, redshift: IamDatabase, cache: CredentialCache
) -> None:
    block = {**redshift.config.to_dict(), "password_duration": seconds}

    with pytest.raises(ConfigError) as caught:
        AwsIamConfig.from_extra(block)
    assert caught.value.fields == ["password_duration"]
    with pytest.raises(ConfigError, match="password_duration"):
        await iampool.create_pool(redshift.dsn, aws_iam=block, cache=cache)
    assert cache.stats()["sts_calls"] == 0


# -- the database refusing the password -------------------------------------------------------


async def test_a_refused_password_is_retried_once_with_a_fresh_one(
    redshift: IamDatabase, fake_aws: FakeAws, cache: CredentialCache
) -> None:
    before = Counter(fake_aws.calls)
    redshift.gateway.reject_next(1)

    connection = await iampool.connect(redshift.dsn, aws_iam=redshift.config, cache=cache)
    try:
        assert await connection.fetchval("SELECT current_user") == IAM_APP
    finally:
        connection.close()

    assert redshift.gateway.rejected == Counter({"forced": 1})
    assert redshift.gateway.accepted == 1
    # the refused password was dropped and a new one minted; the STS credentials were kept
    assert calls_since(fake_aws, before) == {"AssumeRole": 1, "GetClusterCredentials": 2}
    assert open_sockets_to(redshift.gateway.port) == []


async def test_a_password_refused_twice_raises_auth_token_rejected_with_redshift_advice(
    redshift: IamDatabase, cache: CredentialCache
) -> None:
    redshift.gateway.reject_next(2)
    auth = iampool.auth_for(
        redshift.config, host=redshift.gateway.host, port=redshift.gateway.port, cache=cache
    )

    with pytest.raises(AuthTokenRejected) as caught:
        await iampool.connect(redshift.dsn, aws_iam=redshift.config, cache=cache)

    error = caught.value
    assert error.server_message == f'PAM authentication failed for user "{IAM_APP}"'
    assert error.endpoint == redshift.gateway.endpoint
    assert f"refused IAM credentials for user '{APP}' twice" in str(error)
    assert "db_groups, auto_create" in str(error)  # the Redshift advice, not the RDS one
    assert "rds_iam" not in str(error)
    password = (await auth.credentials()).password  # minted after the failure: a third one
    assert password not in str(error)
    assert password not in repr(error.__cause__)
    assert redshift.gateway.rejected == Counter({"forced": 2})


async def test_a_refused_login_leaves_no_socket_open(
    redshift: IamDatabase, cache: CredentialCache
) -> None:
    # redshift-connector keeps the socket of a refused login open until garbage collection
    redshift.gateway.reject_next(2)
    with pytest.raises(AuthTokenRejected):
        await iampool.connect(redshift.dsn, aws_iam=redshift.config, cache=cache)

    assert open_sockets_to(redshift.gateway.port) == []
    await wait_idle(redshift.gateway)


async def test_a_server_not_offering_tls_gets_no_password_and_no_socket_is_left_open(
    redshift: IamDatabase, fake_aws: FakeAws, cache: CredentialCache
) -> None:
    async with IamGateway(
        "postgresql", upstream=UPSTREAM, authority=fake_aws, mode="redshift", offer_tls=False
    ) as plain:
        dsn = plain.dsn(IAM_APP, redshift.config.db_name)
        assert "sslmode" not in dsn  # require by default; never plain text

        with pytest.raises(TlsNotOfferedError, match="did not offer TLS"):
            await iampool.connect(dsn, aws_iam=redshift.config, cache=cache)

        assert open_sockets_to(plain.port) == []
        assert plain.secrets_seen_in_plaintext == ()
        assert plain.accepted == 0


async def test_a_server_whose_certificate_is_not_trusted_gets_no_password(
    redshift: IamDatabase, cache: CredentialCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    system_store = ssl.get_default_verify_paths().openssl_cafile
    monkeypatch.setenv("SSL_CERT_FILE", system_store)  # without the gateway's CA

    with pytest.raises(Exception) as caught:  # noqa: PT011 - the driver's InterfaceError
        await iampool.connect(redshift.dsn, aws_iam=redshift.config, cache=cache)

    error: BaseException | None = caught.value
    while error is not None and not isinstance(error, ssl.SSLCertVerificationError):
        error = error.__cause__ or error.__context__
    assert isinstance(error, ssl.SSLCertVerificationError)
    assert open_sockets_to(redshift.gateway.port) == []
    await wait_idle(redshift.gateway)
    assert redshift.gateway.accepted == 0
    assert redshift.gateway.rejected == Counter()


# -- connections and the pool -------------------------------------------------------------------


async def test_connect_returns_a_redshift_connection_with_asyncpg_like_methods(
    redshift: IamDatabase, cache: CredentialCache
) -> None:
    connection = await iampool.connect(redshift.dsn, aws_iam=redshift.config, cache=cache)
    try:
        assert isinstance(connection, RedshiftConnection)
        await connection.execute("CREATE TEMPORARY TABLE sales (id int, amount int)")
        await connection.execute("INSERT INTO sales VALUES (%s, %s), (%s, %s)", 1, 10, 2, 32)
        rows = await connection.fetch("SELECT id, amount FROM sales ORDER BY id")
        assert rows == [(1, 10), (2, 32)]
        assert await connection.fetchrow("SELECT sum(amount), count(*) FROM sales") == (42, 2)
        assert await connection.fetchval("SELECT amount FROM sales WHERE id = %s", 2) == 32
        assert await connection.fetchval("SELECT id, amount FROM sales", column=1) == 10
        assert await connection.fetchrow("SELECT * FROM sales WHERE id = 3") is None
        assert await connection.fetchval("SELECT * FROM sales WHERE id = 3") is None
        assert await connection.fetch("SELECT * FROM sales WHERE id = 3") == []
    finally:
        connection.close()
        connection.close()  # a second close is harmless

    assert connection.is_closed()
    await wait_idle(redshift.gateway)
    assert redshift.gateway.accepted == 1


async def test_pool_shortcuts_run_on_a_pooled_connection_and_close_leaves_the_gateway_idle(
    redshift: IamDatabase, cache: CredentialCache
) -> None:
    pool = await iampool.create_pool(
        redshift.dsn, aws_iam=redshift.config, min_size=2, max_size=2, cache=cache
    )
    try:
        assert pool.get_size() == pool.get_idle_size() == 2
        await pool.execute("SELECT 1")
        assert await pool.fetch("SELECT generate_series(1, 3)") == [(1,), (2,), (3,)]
        assert await pool.fetchrow("SELECT 1, 'a'") == (1, "a")
        assert await pool.fetchval("SELECT current_user") == IAM_APP
    finally:
        await pool.close()

    await wait_idle(redshift.gateway)
    assert redshift.gateway.active == 0
    assert redshift.gateway.accepted == 2  # min_size connections, reused by every shortcut


async def test_a_sql_error_keeps_the_connection_and_a_lost_one_is_replaced(
    redshift: IamDatabase, cache: CredentialCache
) -> None:
    pool = await iampool.create_pool(
        redshift.dsn, aws_iam=redshift.config, min_size=0, max_size=2, cache=cache
    )
    try:
        with pytest.raises(Exception, match="division by zero"):
            await pool.fetchval("SELECT 1 / 0")
        assert (pool.get_size(), redshift.gateway.accepted) == (1, 1)  # kept and reused

        async with pool.acquire() as victim:
            pid = await victim.fetchval("SELECT pg_backend_pid()")
            async with pool.acquire() as other:
                assert await other.fetchval("SELECT pg_terminate_backend(%s)", pid) is True
            with pytest.raises(Exception, match="server socket closed"):
                await victim.fetchval("SELECT 1")  # the error is swallowed here ...
        assert victim.is_closed()  # ... but the pool saw it and closed the connection
        with anyio.fail_after(10):
            assert await pool.fetchval("SELECT 1") == 1
        assert pool.get_size() == 1
    finally:
        await pool.close()


async def test_a_connection_closed_inside_acquire_is_not_handed_out_again_nor_its_slot_lost(
    redshift: IamDatabase, cache: CredentialCache
) -> None:
    pool = await iampool.create_pool(
        redshift.dsn, aws_iam=redshift.config, min_size=0, max_size=1, cache=cache
    )
    try:
        async with pool.acquire() as connection:
            connection.close()
        with anyio.fail_after(10):
            async with pool.acquire() as replacement:
                assert replacement is not connection
                assert await replacement.fetchval("SELECT 1") == 1
        assert pool.get_size() == 1
    finally:
        await pool.close()
    assert redshift.gateway.accepted == 2


async def test_a_cancelled_query_frees_its_slot_at_once_and_its_connection_closes_after_it(
    redshift: IamDatabase, cache: CredentialCache
) -> None:
    # The victim's query waits for an advisory lock the test holds, so it cannot end before
    # the test lets it: whatever happens while the lock is held happened during the query.
    threads_before = driver_threads()
    pool = await iampool.create_pool(
        redshift.dsn, aws_iam=redshift.config, min_size=2, max_size=2, cache=cache
    )
    waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    try:
        async with pool.acquire() as holder:
            await holder.execute("SELECT pg_advisory_lock(1616)")
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as group:
                    group.start_soon(pool.fetchval, "SELECT pg_advisory_lock(1616)")
                    with anyio.fail_after(10):  # the victim's query reaches the server
                        while await holder.fetchval(waiting) == 0:  # noqa: ASYNC110
                            await anyio.sleep(0.01)
                    scope.cancel()
            assert scope.cancelled_caught  # returned while its query still waits for the lock
            assert await holder.fetchval(waiting) == 1
            assert pool.get_size() == 1  # the victim's slot is free, its connection discarded

            # The slot can be used at once; the new connection's calls run in the idle thread.
            async with pool.acquire() as newcomer:
                assert await newcomer.fetchval("SELECT 1") == 1
                assert 1 <= driver_threads() - threads_before <= 2
            await holder.execute("SELECT pg_advisory_unlock(1616)")
    finally:
        await pool.close()  # waits for the victim's query to end and its connection to close

    assert driver_threads() <= threads_before
    await wait_idle(redshift.gateway)
    assert redshift.gateway.active == 0
    assert open_sockets_to(redshift.gateway.port) == []
    assert redshift.gateway.accepted == 3


async def test_a_pool_that_cannot_fill_leaves_no_thread_and_no_socket(
    redshift: IamDatabase, cache: CredentialCache
) -> None:
    before = set(threading.enumerate())
    redshift.gateway.reject_next(2)

    with pytest.raises(AuthTokenRejected):
        await iampool.create_pool(
            redshift.dsn, aws_iam=redshift.config, min_size=1, max_size=2, cache=cache
        )

    started = [
        thread
        for thread in set(threading.enumerate()) - before
        if thread.name.startswith("iampool-redshift-")
    ]
    assert 1 <= len(started) <= 2  # the connect and its retry ran in the pool's own threads ...
    for thread in started:
        await anyio.to_thread.run_sync(thread.join, 10)
    assert not any(thread.is_alive() for thread in started)  # ... which exit without the GC
    assert open_sockets_to(redshift.gateway.port) == []


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_the_pool_serves_trio_tasks_too(redshift: IamDatabase, fake_aws: FakeAws) -> None:
    cache = CredentialCache()
    before = Counter(fake_aws.calls)
    users: list[str] = []
    try:
        pool = await iampool.create_pool(
            redshift.dsn, aws_iam=redshift.config, min_size=0, max_size=3, cache=cache
        )
        try:

            async def task() -> None:
                users.append(await pool.fetchval("SELECT current_user"))

            async with anyio.create_task_group() as group:
                for _ in range(12):
                    group.start_soon(task)
        finally:
            await pool.close()
    finally:
        await cache.aclose()

    assert users == [IAM_APP] * 12
    assert calls_since(fake_aws, before) == {"AssumeRole": 1, "GetClusterCredentials": 1}
    await wait_idle(redshift.gateway)
