"""Logins kept in Secrets Manager, against the real servers behind password-mode gateways.

The session's ``fake_aws`` holds the secrets (moto's Secrets Manager, ``GetSecretValue``
counted); ``secret_postgres`` / ``secret_mysql`` put a gateway that checks passwords itself in
front of this machine's PostgreSQL and MariaDB, and rotate a user's password there before the
secret follows, as Secrets Manager's rotation functions do. Each test has its own cache, so
``GetSecretValue`` calls count exactly.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import subprocess
import sys
import time
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
import anyio.to_thread
import pytest

import iampool
from iampool import AuthTokenRejected, AwsIamConfig, CredentialCache, auth_for
from iampool.testing import FakeAws, SecretDatabase

from ..secrets_reach import search_secrets
from .test_processes import in_child, login

pytestmark = pytest.mark.anyio

DRIVERS = ("asyncpg", "psycopg", "aiomysql", "asyncmy", "redshift_connector")
SCHEMES = {
    "asyncpg": "postgresql",
    "psycopg": "postgresql+psycopg",
    "aiomysql": "mysql+aiomysql",
    "asyncmy": "mysql+asyncmy",
    "redshift_connector": "redshift",
}
ROTATION_WINDOW = 20.0  # seconds between the database's new password and the secret's


@pytest.fixture(autouse=True)
def _quiet_psycopg_pool() -> Iterator[None]:
    """psycopg_pool warns of every closed connection returned to it, which these tests do on
    purpose (so that the pool opens a new one)."""
    logger = logging.getLogger("psycopg.pool")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


@pytest.fixture
async def cache() -> AsyncIterator[CredentialCache]:
    cache = CredentialCache()
    yield cache
    await cache.aclose()


@pytest.fixture
def databases(
    secret_postgres: SecretDatabase, secret_mysql: SecretDatabase, secret_redshift: SecretDatabase
) -> dict[str, SecretDatabase]:
    """Each driver's database (its gateway and secret), by driver."""
    by_engine = {"postgresql": secret_postgres, "mysql": secret_mysql, "redshift": secret_redshift}
    return {name: by_engine[SCHEMES[name].split("+", 1)[0]] for name in DRIVERS}


def distinct(databases: dict[str, SecretDatabase]) -> list[SecretDatabase]:
    return list({db.secret_id: db for db in databases.values()}.values())


def dsn_for(driver: str, database: SecretDatabase) -> str:
    return f"{SCHEMES[driver]}://{database.dsn.split('://', 1)[1]}"


def secret_calls(aws: FakeAws, secret_id: str) -> int:
    return sum(1 for params in aws.requests["GetSecretValue"] if params["SecretId"] == secret_id)


def with_fields(database: SecretDatabase, **fields: Any) -> AwsIamConfig:
    return AwsIamConfig.from_extra({**database.config.to_dict(), **fields})


# -- one pool per driver, with helpers that open a NEW connection every time -----------------


class Driver:
    """A pool of one driver and a way to make it open a new connection each time."""

    def __init__(self, name: str, pool: Any) -> None:
        self.name = name
        self.pool = pool

    async def new_connection_user(self) -> str:
        """Acquire, ask who we are, then close the connection so the pool opens a new one."""
        if self.name == "asyncpg":
            async with self.pool.acquire() as connection:
                user = await connection.fetchval("SELECT current_user")
                await connection.close()
        elif self.name == "psycopg":
            async with self.pool.connection() as connection:
                cursor = await connection.execute("SELECT current_user")
                (user,) = await cursor.fetchone()
                await connection.close()
        elif self.name == "redshift_connector":
            async with self.pool.acquire() as connection:
                user = await connection.fetchval("SELECT current_user")
                connection.close()
        else:
            async with self.pool.acquire() as connection:
                async with connection.cursor() as cursor:
                    await cursor.execute(
                        "SELECT USER()"
                    )  # as logged in (an anonymous account may match)
                    (user,) = await cursor.fetchone()
                connection.close()
        return str(user).split("@", 1)[0]

    def pool_errors(self) -> int:
        if self.name == "psycopg":
            return int(self.pool.get_stats().get("connections_errors", 0))
        return 0


async def open_pools(
    databases: dict[str, SecretDatabase],
    cache: CredentialCache,
    configs: dict[str, AwsIamConfig] | None = None,
) -> list[Driver]:
    drivers = []
    for name in DRIVERS:
        database = databases[name]
        config = (configs or {}).get(name, database.config)
        options: dict[str, Any] = {"min_size": 1, "max_size": 4}
        if name == "psycopg":
            options["timeout"] = 120.0  # getconn's wait: a login may wait out a rotation
        pool = await iampool.create_pool(
            dsn_for(name, database), aws_iam=config, cache=cache, **options
        )
        drivers.append(Driver(name, pool))
    return drivers


async def close_pools(drivers: list[Driver]) -> None:
    for driver in drivers:
        if driver.name in ("asyncpg", "psycopg", "redshift_connector"):
            await driver.pool.close()
        else:
            driver.pool.close()
            await driver.pool.wait_closed()


class Load:
    """Workers that open new connections through every pool until told to stop."""

    def __init__(self, drivers: list[Driver], workers: int) -> None:
        self.drivers = drivers
        self.workers = workers
        self.done: Counter[str] = Counter()
        self.users: Counter[str] = Counter()
        self.failures: list[str] = []
        self.stop = anyio.Event()

    async def run(self) -> None:
        async with anyio.create_task_group() as group:
            for driver in self.drivers:
                for _ in range(self.workers):
                    group.start_soon(self._worker, driver)

    async def _worker(self, driver: Driver) -> None:
        while not self.stop.is_set():
            try:
                user = await driver.new_connection_user()
            except Exception as exc:  # a failed connect: what this test counts
                self.failures.append(f"{driver.name}: {type(exc).__name__}: {exc}")
                await anyio.sleep(0.05)
                continue
            self.done[driver.name] += 1
            self.users[user] += 1


async def run_under_load(
    drivers: list[Driver],
    rotation: Callable[[], Any],
    *,
    workers: int,
    before: float,
    after: float,
    total: int = 1000,
) -> Load:
    """Start the load, run ``rotation`` (blocking) in a worker thread ``before`` seconds later,
    keep the load on for ``after`` more seconds and until ``total`` new connections were made
    across the rotation (the rate depends on the machine), then stop it."""
    load = Load(drivers, workers)
    async with anyio.create_task_group() as group:
        group.start_soon(load.run)
        await anyio.sleep(before)
        await anyio.to_thread.run_sync(rotation)
        await anyio.sleep(after)
        with anyio.fail_after(300):
            while sum(load.done.values()) < total:  # noqa: ASYNC110 (counts, no event to wait on)
                await anyio.sleep(0.2)
        load.stop.set()
    return load


# -- the herd ----------------------------------------------------------------------------------


async def test_herd_of_1000_lookups_makes_one_get_secret_value_call(
    secret_postgres: SecretDatabase, fake_aws: FakeAws, cache: CredentialCache
) -> None:
    host, port = secret_postgres.gateway.signed_endpoint
    auth = auth_for(secret_postgres.config, host=host, port=port, cache=cache)
    before = secret_calls(fake_aws, secret_postgres.secret_id)
    users: list[str] = []

    async def lookup() -> None:
        users.append((await auth.credentials()).user)

    async with anyio.create_task_group() as group:
        for _ in range(1000):
            group.start_soon(lookup)
    assert secret_calls(fake_aws, secret_postgres.secret_id) - before == 1
    assert len(users) == 1000
    assert set(users) == {secret_postgres.current()["username"]}


async def test_herd_of_1000_connects_on_a_cold_pool_makes_one_get_secret_value_call(
    secret_postgres: SecretDatabase, fake_aws: FakeAws, cache: CredentialCache
) -> None:
    before = secret_calls(fake_aws, secret_postgres.secret_id)
    accepted = secret_postgres.gateway.accepted
    pool = await iampool.create_pool(
        secret_postgres.dsn, aws_iam=secret_postgres.config, cache=cache, min_size=0, max_size=20
    )
    try:
        users: list[str] = []

        async def connect() -> None:
            async with pool.acquire() as connection:
                users.append(await connection.fetchval("SELECT current_user"))

        async with anyio.create_task_group() as group:
            for _ in range(1000):
                group.start_soon(connect)
    finally:
        await pool.close()
    assert len(users) == 1000
    assert secret_calls(fake_aws, secret_postgres.secret_id) - before == 1
    assert secret_postgres.gateway.accepted - accepted == 20  # every connection of the pool


# -- rotations ---------------------------------------------------------------------------------


async def test_single_user_rotation_under_load_fails_no_connect_and_ends_on_the_new_password(
    databases: dict[str, SecretDatabase], fake_aws: FakeAws, cache: CredentialCache
) -> None:
    drivers = await open_pools(databases, cache)
    rotated = distinct(databases)
    refused_before = sum(db.gateway.rejected["bad_password"] for db in rotated)
    calls_before = {db.secret_id: secret_calls(fake_aws, db.secret_id) for db in rotated}
    started = time.monotonic()

    def rotate_both() -> None:  # all at once, each with its window
        with ThreadPoolExecutor(len(rotated)) as threads:
            rotations = [
                threads.submit(functools.partial(db.rotate, window=ROTATION_WINDOW))
                for db in rotated
            ]
            for rotation in rotations:
                rotation.result()

    try:
        # No new login can succeed inside the window (the database has the new password, the
        # secret still the old one): they wait it out. The load before and after it makes the
        # 1,000 new connections.
        load = await run_under_load(drivers, rotate_both, workers=3, before=12.0, after=14.0)
        errors = {driver.name: driver.pool_errors() for driver in drivers}
        # After the rotation: every driver's next new connection logs in with the new password.
        for driver in drivers:
            await driver.new_connection_user()
    finally:
        await close_pools(drivers)
    elapsed = time.monotonic() - started
    total = sum(load.done.values())
    print(f"\nsingle-user rotation: {dict(load.done)} new connections in {elapsed:.1f} s")
    assert load.failures == []
    assert errors == dict.fromkeys(DRIVERS, 0)
    assert total >= 1000, dict(load.done)
    assert all(load.done[name] > 0 for name in DRIVERS)
    refused = sum(db.gateway.rejected["bad_password"] for db in rotated)
    assert refused > refused_before  # the old password was refused during the window
    for db in rotated:
        # The database's password is the secret's current one, and it is the one in use.
        calls = secret_calls(fake_aws, db.secret_id) - calls_before[db.secret_id]
        # One read at the start, then at most about one a second while logins were refused.
        assert 1 <= calls <= ROTATION_WINDOW + 10, calls


async def test_alternating_users_rotation_under_load_fails_no_connect_and_switches_user(
    databases: dict[str, SecretDatabase], cache: CredentialCache
) -> None:
    ttl = 3  # the secret is read again every few seconds: the new user is seen soon after
    configs = {name: with_fields(databases[name], secret_ttl=ttl) for name in DRIVERS}
    drivers = await open_pools(databases, cache, configs)
    rotated = distinct(databases)
    old = {db.secret_id: db.current()["username"] for db in rotated}
    new: dict[str, str] = {}

    def rotate_both() -> None:  # all at once, each with its window
        with ThreadPoolExecutor(len(rotated)) as threads:
            rotations = {
                db.secret_id: threads.submit(
                    functools.partial(db.rotate_users, window=ROTATION_WINDOW)
                )
                for db in rotated
            }
            new.update({secret_id: done.result() for secret_id, done in rotations.items()})

    try:
        # The old user keeps working through the window: no login waits, none fails.
        load = await run_under_load(drivers, rotate_both, workers=3, before=2.0, after=ttl + 3.0)
        seen_after = {}
        for driver in drivers:
            seen_after[driver.name] = await driver.new_connection_user()
        errors = {driver.name: driver.pool_errors() for driver in drivers}
    finally:
        await close_pools(drivers)
    print(f"\nalternating-users rotation: {dict(load.done)} new connections, users {load.users}")
    assert errors == dict.fromkeys(DRIVERS, 0)
    assert sum(load.done.values()) >= 1000, dict(load.done)
    assert load.failures == []
    for name, user in seen_after.items():
        db = databases[name]
        assert user == new[db.secret_id] != old[db.secret_id]


async def test_a_password_still_refused_after_rotation_window_fails_with_a_clean_error(
    secret_postgres: SecretDatabase, fake_aws: FakeAws, cache: CredentialCache, caplog: Any
) -> None:
    config = with_fields(secret_postgres, rotation_window=2)
    user = secret_postgres.current()["username"]
    secret_postgres.gateway.forget_password(user)  # the secret's password works nowhere
    try:
        caplog.set_level(logging.DEBUG)
        with pytest.raises(AuthTokenRejected) as raised:
            await iampool.connect(secret_postgres.dsn, aws_iam=config, cache=cache)
    finally:
        secret_postgres.gateway.set_password(user, secret_postgres.current()["password"])
    message = str(raised.value)
    assert "rotation_window" in message
    assert secret_postgres.secret_id in message
    # Nowhere an error tracker would look (chain, attributes, frames' locals; searched before
    # this frame holds a secret of its own), nor in the rendered traceback or the log.
    search = search_secrets(raised.value, fake_aws.issued_secrets())
    assert search.found == []
    assert search.texts > 0
    rendered = "".join(traceback.format_exception(raised.value))
    leaked = [s for s in fake_aws.issued_secrets() if s in rendered or s in caplog.text]
    assert leaked == []
    # Open connections are not touched, new ones work again once the password does.
    connection = await iampool.connect(secret_postgres.dsn, aws_iam=config, cache=cache)
    await connection.close()


async def test_secret_host_disagreeing_with_the_dsn_is_a_config_error_naming_both(
    secret_postgres: SecretDatabase, fake_aws: FakeAws, cache: CredentialCache
) -> None:
    arn = fake_aws.create_secret(
        f"iampool-test-elsewhere-{time.monotonic_ns()}",
        {"username": "x", "password": "not-used-1234", "host": "db.example.com", "port": 5432},
    )
    config = with_fields(secret_postgres, secret_id=arn)
    with pytest.raises(iampool.ConfigError) as raised:
        await iampool.connect(secret_postgres.dsn, aws_iam=config, cache=cache)
    message = str(raised.value)
    assert "db.example.com" in message
    assert secret_postgres.gateway.host in message
    assert "not-used-1234" not in message


# -- the command line ----------------------------------------------------------------------------


def iampool_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "iampool", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=dict(os.environ),
        check=False,
    )


@pytest.mark.parametrize("database", ["secret_postgres", "secret_mysql"])
def test_check_logs_in_with_the_secret_and_reports_its_user(
    database: str, request: pytest.FixtureRequest, fake_aws: FakeAws
) -> None:
    db: SecretDatabase = request.getfixturevalue(database)
    result = iampool_command("check", db.dsn, "--extra", json.dumps(db.config.to_dict()))
    assert result.returncode == 0, result.stderr
    login = db.current()
    assert f"user {login['username']}" in result.stdout
    assert "identity" in result.stdout
    for secret in fake_aws.issued_secrets():
        assert secret not in result.stdout + result.stderr


def test_token_prints_the_secrets_user_and_the_password_only_when_asked(
    secret_postgres: SecretDatabase,
) -> None:
    host, port = secret_postgres.gateway.signed_endpoint
    extra = json.dumps(secret_postgres.config.to_dict())
    login = secret_postgres.current()
    quiet = iampool_command("token", "--extra", extra, "--host", host, "--port", str(port))
    assert quiet.returncode == 0, quiet.stderr
    assert f"user: {login['username']}" in quiet.stdout
    assert login["password"] not in quiet.stdout + quiet.stderr
    shown = iampool_command(
        "token", "--extra", extra, "--host", host, "--port", str(port), "--show-password"
    )
    assert shown.returncode == 0, shown.stderr
    assert f"password: {login['password']}" in shown.stdout


# -- Redshift: a password login with redshift-connector ------------------------------------------


async def test_redshift_password_login_survives_a_single_user_rotation(
    secret_redshift: SecretDatabase, fake_aws: FakeAws, cache: CredentialCache
) -> None:
    assert secret_redshift.dsn.startswith("redshift://")
    done: list[str] = []
    failures: list[str] = []
    stop = anyio.Event()

    async def worker() -> None:
        while not stop.is_set():
            try:
                connection = await iampool.connect(
                    secret_redshift.dsn, aws_iam=secret_redshift.config, cache=cache
                )
            except Exception as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
                await anyio.sleep(0.05)
                continue
            try:
                done.append(await connection.fetchval("SELECT current_user"))
            finally:
                connection.close()

    refused = secret_redshift.gateway.rejected["bad_password"]
    async with anyio.create_task_group() as group:
        for _ in range(3):
            group.start_soon(worker)
        await anyio.sleep(1.0)
        await anyio.to_thread.run_sync(functools.partial(secret_redshift.rotate, window=4.0))
        with anyio.fail_after(60):
            after = len(done)
            while len(done) < after + 10:  # noqa: ASYNC110 (counts, no event to wait on)
                await anyio.sleep(0.1)
        stop.set()
    assert failures == []
    assert set(done) == {secret_redshift.current()["username"]}
    assert secret_redshift.gateway.rejected["bad_password"] > refused  # the window was felt


# -- processes -----------------------------------------------------------------------------------


def test_a_forked_child_reads_the_secret_with_its_own_client_after_clear(
    secret_postgres: SecretDatabase, fake_aws: FakeAws
) -> None:
    block = secret_postgres.config.to_dict()
    cache = CredentialCache()
    try:
        before = secret_calls(fake_aws, secret_postgres.secret_id)
        user = login(secret_postgres.dsn, block, cache)  # the parent's clients now exist

        def child() -> dict[str, Any]:
            served = login(secret_postgres.dsn, block, cache)  # inherited, warm
            cache.clear()
            return {"warm": served, "user": login(secret_postgres.dsn, block, cache)}

        result = in_child(child)
        cache.clear()
        assert login(secret_postgres.dsn, block, cache) == user  # the parent still works
    finally:
        cache.close()
    assert result["warm"] == result["user"] == user == secret_postgres.current()["username"]
    # the parent's first read, the child's read after clear() (its own loop and client), the
    # parent's read after clear()
    assert secret_calls(fake_aws, secret_postgres.secret_id) - before == 3
