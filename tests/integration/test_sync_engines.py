"""iampool.superset.do_connect: a synchronous SQLAlchemy engine (PyMySQL) through the IAM gateway.

psycopg2 is exercised by tests/superset/ (Superset's environment has it); this suite's
environment has PyMySQL and SQLAlchemy 2.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, event, text

from iampool import CredentialCache
from iampool.superset import do_connect
from iampool.testing import FakeAws, IamDatabase


@pytest.fixture
def cache() -> Iterator[CredentialCache]:
    cache = CredentialCache()
    yield cache
    cache.close()


def test_a_pymysql_engine_logs_in_from_many_threads_with_one_assume_role(
    iam_mysql: IamDatabase, fake_aws: FakeAws, cache: CredentialCache
) -> None:
    url = f"mysql+pymysql://{iam_mysql.dsn.split('://', 1)[1]}"
    engine = create_engine(url, pool_size=8, max_overflow=0)
    event.listen(engine, "do_connect", do_connect(url, aws_iam=iam_mysql.config, cache=cache))
    assume_roles = fake_aws.calls["AssumeRole"]
    accepted = iam_mysql.gateway.accepted
    users: list[Any] = []
    barrier = threading.Barrier(8)

    def query() -> None:
        barrier.wait()
        with engine.connect() as connection:
            users.append(connection.execute(text("SELECT CURRENT_USER()")).scalar())

    threads = [threading.Thread(target=query) for _ in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        engine.dispose()

    assert len(users) == 8
    assert all(str(user).startswith(f"{iam_mysql.user}@") for user in users)
    assert iam_mysql.gateway.accepted - accepted == 8  # eight IAM logins, over TLS
    assert fake_aws.calls["AssumeRole"] - assume_roles == 1
    assert cache.stats()["tokens_signed"] == 1
