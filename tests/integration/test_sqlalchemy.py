"""SQLAlchemy's AsyncEngine with iampool's async_creator, through the IAM gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.to_thread
import pytest
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

import iampool.pools
import iampool.pools._plan
from iampool import ConfigError, CredentialCache
from iampool.sqlalchemy import async_creator
from tests.users import APP

pytestmark = pytest.mark.anyio

CURRENT_USER = {"iam_postgres": "SELECT current_user", "iam_mysql": "SELECT CURRENT_USER()"}
# SQLAlchemy's URL for each async dialect, and the database fixture it runs against.
DIALECTS = {
    "postgresql+asyncpg": "iam_postgres",
    "postgresql+psycopg": "iam_postgres",
    "mysql+aiomysql": "iam_mysql",
    "mysql+asyncmy": "iam_mysql",
}


@pytest.fixture
async def cache() -> AsyncIterator[CredentialCache]:
    cache = CredentialCache()
    yield cache
    await cache.aclose()


@pytest.mark.parametrize("dialect", sorted(DIALECTS))
async def test_engine_connections_authenticate_with_one_assume_role(
    dialect: str, request: pytest.FixtureRequest, cache: CredentialCache, fake_aws: Any
) -> None:
    database = DIALECTS[dialect]
    db = request.getfixturevalue(database)
    dsn = f"{dialect}://{db.dsn.split('://', 1)[1]}"  # the engine's driver, iampool's DSN
    assume_roles = fake_aws.calls["AssumeRole"]
    engine = create_async_engine(
        f"{dialect}://",
        async_creator=async_creator(dsn, aws_iam=db.config, cache=cache),
        pool_size=5,
        max_overflow=0,
    )
    users: list[str] = []
    try:

        async def query() -> None:
            async with engine.connect() as connection:
                users.append(str((await connection.execute(text(CURRENT_USER[database]))).scalar()))

        async with anyio.create_task_group() as group:
            for _ in range(50):
                group.start_soon(query)
    finally:
        await engine.dispose()
    await anyio.to_thread.run_sync(db.gateway.wait_idle)

    assert {user.split("@", 1)[0] for user in users} == {APP}
    assert len(users) == 50
    assert fake_aws.calls["AssumeRole"] - assume_roles == 1
    assert cache.stats()["tokens_signed"] == 1


def test_async_creator_validates_the_dsn_at_engine_creation(iam_postgres: Any) -> None:
    with pytest.raises(ConfigError, match="sslmode"):
        async_creator(iam_postgres.dsn + "&sslmode=disable", aws_iam=iam_postgres.config)


def test_async_creator_refuses_redshift(iam_redshift: Any) -> None:
    with pytest.raises(ConfigError, match="postgresql:// and mysql://"):
        async_creator(iam_redshift.dsn, aws_iam=iam_redshift.config)


@pytest.mark.parametrize("dialect", sorted(DIALECTS))
async def test_the_engines_own_url_object_serves_as_the_dsn(
    dialect: str, request: pytest.FixtureRequest, cache: CredentialCache
) -> None:
    database = DIALECTS[dialect]
    db = request.getfixturevalue(database)
    url = make_url(db.dsn).set(drivername=dialect)  # host, user, database, sslrootcert
    engine = create_async_engine(
        url, async_creator=async_creator(url, aws_iam=db.config, cache=cache)
    )
    try:
        async with engine.connect() as connection:
            user = str((await connection.execute(text(CURRENT_USER[database]))).scalar())
    finally:
        await engine.dispose()
    await anyio.to_thread.run_sync(db.gateway.wait_idle)

    assert user.split("@", 1)[0] == APP
    assert cache.stats()["tokens_signed"] == 1


@pytest.mark.parametrize(
    ("dialect", "kwargs", "field"),
    [
        ("postgresql+asyncpg", {"ssl": False}, "ssl"),
        ("mysql+aiomysql", {"ssl": "disable"}, "ssl"),
        ("mysql+asyncmy", {"ssl": False}, "ssl"),
        ("postgresql+psycopg", {"sslmode": "prefer"}, "sslmode"),
        ("mysql+aiomysql", {"minsize": 1}, "minsize"),
    ],
)
async def test_keywords_are_checked_at_engine_creation_before_any_aws_call(
    dialect: str,
    kwargs: dict[str, Any],
    field: str,
    request: pytest.FixtureRequest,
    cache: CredentialCache,
    fake_aws: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prefetches: list[Any] = []
    prefetch = iampool.pools._plan.prefetch
    monkeypatch.setattr(
        iampool.pools._plan, "prefetch", lambda auth: (prefetches.append(auth), prefetch(auth))
    )
    db = request.getfixturevalue(DIALECTS[dialect])
    dsn = f"{dialect}://{db.dsn.split('://', 1)[1]}"
    assume_roles = fake_aws.calls["AssumeRole"]

    with pytest.raises(ConfigError) as caught:
        async_creator(dsn, aws_iam=db.config, cache=cache, **kwargs)
    await anyio.sleep(0.2)  # a prefetch started by mistake would have called AWS by now

    assert prefetches == []  # no credentials were asked for
    assert caught.value.fields == [field]
    assert fake_aws.calls["AssumeRole"] == assume_roles
    assert cache.stats()["misses"] == 0
