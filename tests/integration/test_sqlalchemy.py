"""SQLAlchemy's AsyncEngine with iampool's async_creator, through the IAM gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.to_thread
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from iampool import ConfigError, CredentialCache
from iampool.sqlalchemy import async_creator

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

    assert {user.split("@", 1)[0] for user in users} == {"app"}
    assert len(users) == 50
    assert fake_aws.calls["AssumeRole"] - assume_roles == 1
    assert cache.stats()["tokens_signed"] == 1


def test_async_creator_validates_the_dsn_at_engine_creation(iam_postgres: Any) -> None:
    with pytest.raises(ConfigError, match="sslmode"):
        async_creator(iam_postgres.dsn + "&sslmode=disable", aws_iam=iam_postgres.config)


def test_async_creator_refuses_redshift(iam_redshift: Any) -> None:
    with pytest.raises(ConfigError, match="postgresql:// and mysql://"):
        async_creator(iam_redshift.dsn, aws_iam=iam_redshift.config)
