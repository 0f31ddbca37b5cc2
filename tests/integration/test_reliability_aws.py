"""Reliability when AWS misbehaves (issue 8, scenarios 1, 2, 3, 6, 7 and 9), end to end.

Real connections go through ``iam_postgres`` (PostgreSQL behind the IAM gateway, which verifies
every token against the secret FakeAws issued); AWS is FakeAws with its faults. Each test uses a
role of its own, so AssumeRole requests are counted per test from ``fake_aws.requests``.
Measured counts are logged on the ``reliability`` logger (``--log-cli-level=INFO`` shows them).

Time is the scenario in scenario 1 (a throttle window) and 3 (latency): those tests sleep through
their windows and assert counts; everything else coordinates with events and counters.
``IAMPOOL_THROTTLE_SECONDS`` lengthens scenario 1's throttle (issue 8 asks 30 s; CI runs 5 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote, quote_plus

import anyio
import anyio.to_thread
import pytest

import iampool
from iampool import AwsIamConfig, CredentialCache, CredentialError, auth_for
from iampool._cache import mint_context
from iampool.testing import FakeAws, IamDatabase

from ..conftest import leaked_secrets

pytestmark = pytest.mark.anyio

log = logging.getLogger("reliability")

REGION = "us-east-1"
THROTTLE_SECONDS = float(os.environ.get("IAMPOOL_THROTTLE_SECONDS", "5"))


@pytest.fixture
def aws(fake_aws: FakeAws) -> Iterator[FakeAws]:
    """The session's FakeAws; faults and early expiry a test sets do not outlive it."""
    yield fake_aws
    fake_aws.faults.clear()
    fake_aws.expire_credentials_early(None)
    fake_aws.end_outage()


@pytest.fixture
def db(iam_postgres: IamDatabase) -> IamDatabase:
    iam_postgres.gateway.reset_counters()
    return iam_postgres


@pytest.fixture
def new_cache() -> Iterator[Callable[..., CredentialCache]]:
    caches: list[CredentialCache] = []

    def new(**options: Any) -> CredentialCache:
        caches.append(CredentialCache(**options))
        return caches[-1]

    yield new
    for cache in caches:
        cache.close()


def new_role(aws: FakeAws, *, external_id: str | None = None) -> str:
    return aws.create_role(f"iampool-rel-{uuid.uuid4().hex[:12]}", external_id=external_id)


def with_role(db: IamDatabase, role_arn: str, **fields: Any) -> AwsIamConfig:
    """The database's ``aws_iam`` block with a role of this test's own."""
    return AwsIamConfig.from_extra({**db.config.to_dict(), "role_arn": role_arn, **fields})


def assume_roles(aws: FakeAws, role_arn: str) -> int:
    """AssumeRole requests FakeAws received for ``role_arn`` (faulted ones included)."""
    return sum(1 for params in aws.requests["AssumeRole"] if params.get("RoleArn") == role_arn)


def assert_no_secret(*texts: str, also: tuple[str, ...] = ()) -> None:
    text = "\n".join(texts)
    assert leaked_secrets(text) == []
    assert [secret for secret in also if secret in text] == []


def asyncio_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What asyncio logged at WARNING or above ("Task exception was never retrieved", "Task was
    destroyed but it is pending", ...)."""
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "asyncio" and record.levelno >= logging.WARNING
    ]


async def current_user(connection: Any) -> str:
    return str(await connection.fetchval("SELECT current_user"))


class OffsetClock:
    """The wall clock moved ``offset`` seconds ahead: the cache lives in the future while AWS,
    the signer and the gateway keep real time (expiry without waiting for it)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


async def wait_until(condition: Callable[[], bool], within: float = 20.0) -> None:
    """Poll a counter that changes on another thread (the cache's service loop)."""
    with anyio.fail_after(within):
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.01)


# -- 1. STS throttled during steady state ------------------------------------------------------


@pytest.mark.slow
async def test_sts_throttled_in_steady_state_fails_no_query_and_recovers_after(
    aws: FakeAws, db: IamDatabase, new_cache: Callable[..., CredentialCache]
) -> None:
    role_arn = new_role(aws)
    config = with_role(db, role_arn)
    # STS credentials refreshed every ~1 s, tokens every ~0.5 s, connections recycled every 5
    # queries: the credential path is busy all the time, as in a long run with real TTLs.
    cache = new_cache(ttl=2, token_reuse=1)
    pool = await iampool.create_pool(
        db.dsn, aws_iam=config, cache=cache, min_size=0, max_size=8, max_queries=5
    )
    failures: list[BaseException] = []
    queries = 0
    peak = 0
    done = anyio.Event()

    async def worker() -> None:
        nonlocal queries, peak
        while not done.is_set():
            try:
                async with pool.acquire() as connection:
                    peak = max(peak, pool.get_size())
                    assert await current_user(connection) == db.user
                queries += 1
            except Exception as exc:  # every failure is counted, none may happen
                failures.append(exc)

    def snapshot() -> dict[str, int]:
        stats = cache.stats()
        return {
            "queries": queries,
            "connections": db.gateway.accepted,
            "assume_role_requests": assume_roles(aws, role_arn),
            "refreshes": stats["refreshes"],
            "refresh_failures": stats["refresh_failures"],
            "errors": stats["errors"],
        }

    try:
        async with anyio.create_task_group() as group:
            for _ in range(16):
                group.start_soon(worker)
            await anyio.sleep(1.5)  # steady state
            before = snapshot()
            aws.faults.throttle("AssumeRole", times=1_000_000)
            await anyio.sleep(THROTTLE_SECONDS)
            throttled = snapshot()
            stale = await mint_context(cache).aws_credentials(
                config
            )  # what the throttle left in use
            aws.faults.clear()
            with anyio.fail_after(40):  # the retry backoff doubles per failure, up to 30 s
                current = stale
                while current.access_key_id == stale.access_key_id:
                    await anyio.sleep(0.05)
                    current = await mint_context(cache).aws_credentials(config)
            recovered = snapshot()
            # Back to normal: the next scheduled refresh (ttl/2 later) succeeds as well.
            await wait_until(
                lambda: assume_roles(aws, role_arn) > recovered["assume_role_requests"]
            )
            after = snapshot()
            done.set()
    finally:
        await pool.close()
    await anyio.to_thread.run_sync(db.gateway.wait_idle)

    log.info(
        "scenario 1: throttle %.0f s; before %s; end of throttle %s; recovered %s; after %s; "
        "failed queries %d; peak pool size %d",
        THROTTLE_SECONDS, before, throttled, recovered, after, len(failures), peak,
    )  # fmt: skip
    assert failures == []
    assert throttled["queries"] > before["queries"]  # queries went on during the throttle
    assert throttled["connections"] > before["connections"]  # ...and NEW connections logged in
    assert throttled["refresh_failures"] > before["refresh_failures"]  # counted
    assert throttled["assume_role_requests"] > before["assume_role_requests"]  # STS was tried
    assert recovered["assume_role_requests"] > throttled["assume_role_requests"]  # recovery
    assert after["refresh_failures"] == recovered["refresh_failures"]  # ...and no more failures
    assert after["errors"] == 0  # no caller ever saw a credential error
    assert peak <= 8
    assert db.gateway.rejected == Counter()


# -- 2. STS failing at cold start, and past credential expiry ----------------------------------


@pytest.mark.parametrize("failure", ["server_error", "outage"])
async def test_sts_down_at_cold_start_fails_the_pool_with_credential_error_within_the_deadline(
    aws: FakeAws, db: IamDatabase, new_cache: Callable[..., CredentialCache], failure: str
) -> None:
    role_arn = new_role(aws)
    config = with_role(db, role_arn)
    cache = new_cache(connect_timeout=0.5, read_timeout=2, max_attempts=2, deadline=5)
    if failure == "server_error":
        aws.faults.server_error("AssumeRole", times=1_000_000)
    else:
        aws.start_outage()
    started = time.monotonic()
    try:
        with anyio.fail_after(5 + 2), pytest.raises(CredentialError) as caught:  # never a hang
            await iampool.create_pool(db.dsn, aws_iam=config, cache=cache, min_size=2, max_size=4)
    finally:
        aws.faults.clear()
        aws.end_outage()
    elapsed = time.monotonic() - started

    code = "ServiceUnavailable" if failure == "server_error" else "EndpointConnectionError"
    assert caught.value.code == code
    assert str(caught.value).startswith(f"Unable to assume IAM role {role_arn} in {REGION}: ")
    assert_no_secret(str(caught.value), repr(caught.value))
    reached = assume_roles(aws, role_arn)
    assert reached == (2 if failure == "server_error" else 0)  # max_attempts, not per connection
    assert db.gateway.accepted == 0
    stats = cache.stats()
    # One failed fetch per key (STS, and the token that waited on it); neither was cached.
    assert (stats["errors"], stats["size"]) == (2, 0)

    pool = await iampool.create_pool(db.dsn, aws_iam=config, cache=cache, min_size=2, max_size=4)
    try:
        assert await pool.fetchval("SELECT current_user") == db.user
    finally:
        await pool.close()
    log.info(
        "scenario 2 (%s at cold start): CredentialError %s after %.2f s, %d AssumeRole requests; "
        "then recovered with %d connections",
        failure, caught.value.code, elapsed, reached, db.gateway.accepted,
    )  # fmt: skip
    assert assume_roles(aws, role_arn) == reached + 1


async def test_sts_outage_past_credential_expiry_fails_clearly_then_recovers_when_sts_returns(
    aws: FakeAws, db: IamDatabase, new_cache: Callable[..., CredentialCache]
) -> None:
    role_arn = new_role(aws)
    config = with_role(db, role_arn)
    clock = OffsetClock()
    cache = new_cache(clock=clock, connect_timeout=0.5, max_attempts=2)
    aws.expire_credentials_early(120)  # sessions now last 2 minutes: usable for 90 s (margin 30)

    connection = await iampool.connect(db.dsn, aws_iam=config, cache=cache)
    assert await current_user(connection) == db.user
    await connection.close()

    with aws.outage():
        clock.offset = 50  # refresh window: the refresh fails, the cached credentials still work
        connection = await iampool.connect(db.dsn, aws_iam=config, cache=cache)
        assert await current_user(connection) == db.user
        await connection.close()
        await wait_until(lambda: cache.stats()["refresh_failures"] >= 1)
        clock.offset = 121  # past the credentials' own expiry: nothing left to serve
        with anyio.fail_after(10), pytest.raises(CredentialError) as caught:
            await iampool.connect(db.dsn, aws_iam=config, cache=cache)
    assert caught.value.code == "EndpointConnectionError"
    message = str(caught.value)
    assert message.startswith(
        f"Unable to assume IAM role {role_arn} in {REGION}: cannot reach the AWS endpoint"
    )
    assert_no_secret(message, repr(caught.value))

    aws.expire_credentials_early(None)  # STS is back, with hour-long sessions again
    connection = await iampool.connect(db.dsn, aws_iam=config, cache=cache)
    assert await current_user(connection) == db.user
    await connection.close()
    stats = cache.stats()
    log.info(
        "scenario 2 (outage past expiry): %d connections, %d AssumeRole requests reached STS, "
        "refresh_failures %d, errors %d: %s",
        db.gateway.accepted, assume_roles(aws, role_arn), stats["refresh_failures"],
        stats["errors"], message,
    )  # fmt: skip
    assert db.gateway.accepted == 3
    assert assume_roles(aws, role_arn) == 2  # the first and the recovery; the outage refused all
    assert stats["refresh_failures"] >= 1
    assert stats["errors"] >= 1


# -- 3. STS slow (10 s) ------------------------------------------------------------------------

SLOW_STS = 10.0


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"read_timeout": 0.5, "max_attempts": 1}, "timed out talking to AWS (ReadTimeoutError)"),
        ({"read_timeout": 30, "deadline": 0.5}, "Timed out after 0.5 s minting AWS credentials"),
    ],
    ids=["read_timeout", "deadline"],
)
async def test_slow_sts_fails_with_a_timeout_error_when_the_configured_time_is_up(
    aws: FakeAws,
    new_cache: Callable[..., CredentialCache],
    db: IamDatabase,
    settings: dict[str, Any],
    expected: str,
) -> None:
    role_arn = new_role(aws)
    cache = new_cache(**settings)
    # The STS client is built first (botocore's loading can take more than 0.5 s on a busy
    # machine; a build outlives a fetch's deadline): what times out below is STS's answer.
    warm_up = with_role(db, new_role(aws))
    for _ in range(20):
        with contextlib.suppress(CredentialError):
            await mint_context(cache).aws_credentials(warm_up)
            break
    aws.faults.latency("AssumeRole", SLOW_STS)
    started = time.monotonic()
    with anyio.fail_after(3), pytest.raises(CredentialError) as caught:
        await mint_context(cache).aws_credentials(with_role(db, role_arn))
    elapsed = time.monotonic() - started
    log.info("scenario 3 (%s): %s after %.2f s", settings, caught.value, elapsed)
    assert caught.value.code == "Timeout"
    assert expected in str(caught.value)
    assert role_arn in str(caught.value)
    assert_no_secret(str(caught.value))
    assert assume_roles(aws, role_arn) == 1


async def test_connect_timeout_is_honoured_while_sts_is_slow_and_the_fetch_still_lands(
    aws: FakeAws, db: IamDatabase, new_cache: Callable[..., CredentialCache]
) -> None:
    role_arn = new_role(aws)
    config = with_role(db, role_arn)
    cache = new_cache(read_timeout=30, deadline=30)
    aws.faults.latency("AssumeRole", SLOW_STS)
    try:
        with anyio.fail_after(3), pytest.raises(TimeoutError):
            await iampool.connect(db.dsn, aws_iam=config, cache=cache, timeout=0.5)
    finally:
        aws.faults.clear()  # the held AssumeRole is answered now
    connection = await iampool.connect(db.dsn, aws_iam=config, cache=cache)
    assert await current_user(connection) == db.user
    await connection.close()
    # The timed-out connect stopped waiting; the fetch it started went on and served this one.
    assert assume_roles(aws, role_arn) == 1
    assert cache.stats()["errors"] == 0


async def test_callers_waiting_on_slow_sts_are_cancelled_promptly_and_the_fetch_serves_the_rest(
    aws: FakeAws, db: IamDatabase, new_cache: Callable[..., CredentialCache]
) -> None:
    role_arn = new_role(aws)
    cache = new_cache(read_timeout=30, deadline=30)
    auth = auth_for(
        with_role(db, role_arn), host=db.gateway.host, port=db.gateway.port, cache=cache
    )
    aws.faults.latency("AssumeRole", SLOW_STS)
    scopes = [anyio.CancelScope() for _ in range(100)]
    passwords: list[str] = []
    returned: list[float] = []

    async def caller(scope: anyio.CancelScope) -> None:
        with scope:
            passwords.append((await auth.credentials()).password)
        if scope.cancel_called:
            returned.append(time.monotonic())

    requests = aws.calls["AssumeRole"]
    try:
        async with anyio.create_task_group() as group:
            for scope in scopes:
                group.start_soon(caller, scope)
            await anyio.to_thread.run_sync(aws.wait_for_calls, "AssumeRole", requests + 1)
            await anyio.wait_all_tasks_blocked()
            cancelled_at = time.monotonic()
            for scope in scopes[::2]:
                scope.cancel()
            await anyio.wait_all_tasks_blocked()
            # Promptly, in counts: every cancelled caller has returned while the fetch still
            # waits on STS (its 10 s latency ends only at faults.clear() below).
            assert len(returned) == 50
            assert passwords == []
            aws.faults.clear()
    finally:
        aws.faults.clear()
    log.info(
        "scenario 3 (cancel waiters): 50 cancelled callers returned within %.4f s (measured, "
        "not asserted); %d others served by %d AssumeRole",
        max(returned) - cancelled_at, len(passwords), assume_roles(aws, role_arn),
    )  # fmt: skip
    assert len(passwords) == 50
    assert len(set(passwords)) == 1
    assert assume_roles(aws, role_arn) == 1


# -- 6. cancellation storm on a real pool ------------------------------------------------------


async def test_cancelling_half_of_1000_acquires_on_a_cold_pool_leaves_no_warning_or_task(
    aws: FakeAws,
    db: IamDatabase,
    new_cache: Callable[..., CredentialCache],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="asyncio")
    role_arn = new_role(aws)
    cache = new_cache(read_timeout=30, deadline=30)
    before = asyncio.all_tasks()
    pool = await iampool.create_pool(
        db.dsn, aws_iam=with_role(db, role_arn), cache=cache, min_size=0, max_size=20
    )
    aws.faults.latency("AssumeRole", 30)  # holds the one AssumeRole until cleared
    scopes = [anyio.CancelScope() for _ in range(1000)]
    users: list[str] = []
    peak = 0

    async def query(scope: anyio.CancelScope) -> None:
        nonlocal peak
        with scope:
            async with pool.acquire() as connection:
                peak = max(peak, pool.get_size())
                users.append(await current_user(connection))

    requests = aws.calls["AssumeRole"]
    try:
        async with anyio.create_task_group() as group:
            for scope in scopes:
                group.start_soon(query, scope)
            await anyio.to_thread.run_sync(aws.wait_for_calls, "AssumeRole", requests + 1)
            await anyio.wait_all_tasks_blocked()
            for scope in scopes[::2]:
                scope.cancel()
            await anyio.wait_all_tasks_blocked()
            aws.faults.clear()
    finally:
        aws.faults.clear()
        await pool.close()
    await anyio.to_thread.run_sync(db.gateway.wait_idle)
    gc.collect()

    stats = cache.stats()
    log.info(
        "scenario 6 (pool): %d of 1000 acquires completed, %d cancelled, %d AssumeRole, "
        "%d tokens signed, %d connections opened, peak pool size %d",
        len(users), sum(scope.cancelled_caught for scope in scopes), assume_roles(aws, role_arn),
        stats["tokens_signed"], db.gateway.accepted, peak,
    )  # fmt: skip
    assert all(scope.cancelled_caught for scope in scopes[::2])
    assert users == [db.user] * 500
    assert assume_roles(aws, role_arn) == 1
    assert stats["tokens_signed"] == 1
    assert peak <= 20
    assert db.gateway.accepted <= 20
    assert asyncio.all_tasks() <= before | {asyncio.current_task()}
    assert asyncio_warnings(caplog) == []


# -- 7. eight threads, eight event loops, one default cache ------------------------------------


def test_eight_threads_with_their_own_event_loops_share_the_default_cache(
    aws: FakeAws, db: IamDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="asyncio")
    role_arn = new_role(aws)  # a role of its own: the process-wide cache has not seen it
    config = with_role(db, role_arn)
    cache = iampool.default_cache()
    before = cache.stats()
    users: dict[int, str] = {}
    failures: list[BaseException] = []

    async def connect_and_ask() -> str:
        connection = await iampool.connect(db.dsn, aws_iam=config)  # no cache=: the default
        try:
            return await current_user(connection)
        finally:
            await connection.close()

    def worker(index: int) -> None:
        try:
            users[index] = asyncio.run(connect_and_ask())
        except BaseException as exc:
            failures.append(exc)

    aws.faults.latency("AssumeRole", 30)  # hold the one AssumeRole until all eight wait on it
    threads = [threading.Thread(target=worker, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    try:
        # Eight token misses and the one STS miss behind them: everybody waits on one fetch.
        deadline = time.monotonic() + 10
        while cache.stats()["misses"] - before["misses"] < 9 and time.monotonic() < deadline:
            time.sleep(0.005)
        waiting = cache.stats()["misses"] - before["misses"]
    finally:
        aws.faults.clear()
        for thread in threads:
            thread.join(30)

    after = cache.stats()
    log.info(
        "scenario 7: %d threads answered %s; %d waited on one fetch; %d AssumeRole, "
        "%d tokens signed; failures %s",
        len(users), sorted(set(users.values())), waiting - 1, assume_roles(aws, role_arn),
        after["tokens_signed"] - before["tokens_signed"], failures,
    )  # fmt: skip
    assert failures == []
    assert users == dict.fromkeys(range(8), db.user)
    assert waiting == 9
    assert assume_roles(aws, role_arn) == 1
    assert after["tokens_signed"] - before["tokens_signed"] == 1
    assert db.gateway.accepted == 8
    assert asyncio_warnings(caplog) == []


# -- 9. secrets --------------------------------------------------------------------------------


async def fault_errors(
    aws: FakeAws, db: IamDatabase, new_cache: Callable[..., CredentialCache], external_id: str
) -> list[CredentialError]:
    """One CredentialError from each fault the scenarios inject, for STS and Redshift."""
    errors: list[CredentialError] = []
    quick = new_cache(connect_timeout=0.5, max_attempts=1)  # failures are not cached: reusable

    async def failing(config: AwsIamConfig, cache: CredentialCache = quick) -> None:
        if config.backend == "rds":
            auth = auth_for(config, host=db.gateway.host, port=db.gateway.port, cache=cache)
        else:  # Redshift: the endpoint from DescribeClusters
            auth = auth_for(config, cache=cache)
        with anyio.fail_after(5), pytest.raises(CredentialError) as caught:
            await auth.credentials()
        errors.append(caught.value)

    role_arn = new_role(aws, external_id=external_id)
    config = with_role(db, role_arn, external_id=external_id)
    for inject in (
        lambda: aws.faults.throttle("AssumeRole"),
        lambda: aws.faults.server_error("AssumeRole", status=503),
        lambda: aws.faults.server_error("AssumeRole", status=500),
        lambda: aws.faults.access_denied("AssumeRole"),
    ):
        inject()
        await failing(config)
    await failing(with_role(db, role_arn, external_id=external_id + "-wrong"))
    with aws.outage():
        await failing(config)
    aws.faults.latency("AssumeRole", SLOW_STS)
    await failing(config, new_cache(read_timeout=0.3, max_attempts=1))
    await failing(config, new_cache(read_timeout=30, deadline=0.3))
    aws.faults.clear()

    cluster = f"iampool-rel-{uuid.uuid4().hex[:8]}"
    aws.create_redshift_cluster(cluster, address="127.0.0.1")
    redshift = AwsIamConfig.from_extra(
        {
            "enabled": True,
            "region": REGION,
            "role_arn": role_arn,
            "external_id": external_id,
            "db_username": "app",
            "cluster_identifier": cluster,
            "db_name": "dev",
        }
    )
    for inject in (
        lambda: aws.faults.throttle("GetClusterCredentials"),
        lambda: aws.faults.access_denied("GetClusterCredentials"),
        lambda: aws.faults.server_error("DescribeClusters"),
    ):
        inject()
        await failing(redshift)
    await failing(AwsIamConfig.from_extra({**redshift.to_dict(), "cluster_identifier": "no-such"}))
    return errors


async def test_no_secret_in_reprs_error_messages_or_stats(
    aws: FakeAws, db: IamDatabase, new_cache: Callable[..., CredentialCache]
) -> None:
    external_id = f"ext-{uuid.uuid4().hex}"
    role_arn = new_role(aws, external_id=external_id)
    config = with_role(db, role_arn, external_id=external_id)
    cache = new_cache()
    aws_credentials = await mint_context(cache).aws_credentials(config)
    rds = auth_for(config, host=db.gateway.host, port=db.gateway.port, cache=cache)
    token = await rds.credentials()
    cluster = f"iampool-rel-{uuid.uuid4().hex[:8]}"
    aws.create_redshift_cluster(cluster, address="127.0.0.1")
    redshift = auth_for(
        {
            "enabled": True,
            "region": REGION,
            "role_arn": role_arn,
            "external_id": external_id,
            "db_username": "app",
            "cluster_identifier": cluster,
            "db_name": "dev",
        },
        cache=cache,
    )
    login = await redshift.credentials()
    errors = await fault_errors(aws, db, new_cache, external_id)

    shown = [
        text
        for thing in (aws_credentials, token, login, rds, redshift, cache, config, cache.stats())
        for text in (repr(thing), str(thing))
    ]
    shown += [text for error in errors for text in (str(error), repr(error))]
    secrets = (
        aws_credentials.secret_access_key,
        aws_credentials.session_token or "<no token>",
        token.password,
        login.password,
        external_id,
    )
    log.info(
        "scenario 9: %d reprs/str and %d CredentialError messages (%s) checked against %d secrets",
        len(shown) - 2 * len(errors), len(errors), sorted({e.code or "" for e in errors}),
        len(aws.issued_secrets()) + len(secrets),
    )  # fmt: skip
    assert len(errors) == 12
    assert "X-Amz-Signature=" in token.password  # the check would see a token
    assert login.password in aws.issued_secrets()  # ...and a Redshift password
    assert_no_secret(*shown, also=secrets)


def test_the_log_check_flags_issued_secrets_and_rds_tokens(aws: FakeAws, iampool_log: Any) -> None:
    logging.getLogger("iampool.check").debug("key %s", aws.base_key.secret_access_key)
    text = "\n".join(record.getMessage() for record in iampool_log.take())  # taken: no failure
    found = ["secret #0 FakeAws issued (raw, URL-encoded or JSON-escaped)"]
    assert leaked_secrets(text) == found
    secret = aws.base_key.secret_access_key
    for form in (quote(secret, safe=""), quote_plus(secret), json.dumps({"k": secret})):
        assert leaked_secrets(f"<p>Token={form}&x=1</p>") == found
    assert leaked_secrets(f"<p>{secret[:-1]}</p>") == []
    token = "db:5432/?Action=connect&DBUser=app&X-Amz-Signature=0123abcd"
    assert leaked_secrets(token) == ["an RDS auth token"]
