"""``DbAuth.credentials_sync``: each backend's credentials for threads without an event loop.

The waiting itself (``Leases.get_blocking``) is tested in test_leases_blocking.py; here, that
every backend keys and mints its blocking logins exactly as its ``credentials()`` does, Redshift's
endpoint discovery included. The fake source is gated from the test; counts, not durations.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest

from iampool import AwsIamConfig, CredentialCache, DbAuth, DbCredentials, auth_for

from .fakes import FakeClock, FakeSource

ROLE = {
    "enabled": True,
    "region": "us-east-1",
    "role_arn": "arn:aws:iam::123456789012:role/app-db",
    "external_id": "ext-7f3a9c",
}
RDS = AwsIamConfig.from_extra({**ROLE, "db_username": "app"})
CLUSTER = AwsIamConfig.from_extra(
    {**ROLE, "db_username": "report", "cluster_identifier": "analytics", "db_name": "dev"}
)
SERVERLESS = AwsIamConfig.from_extra({**ROLE, "workgroup_name": "analytics-wg", "db_name": "dev"})
RDS_HOST = ("app.cluster-abc.us-east-1.rds.amazonaws.com", 5432)


@pytest.fixture
def source() -> FakeSource:
    return FakeSource(FakeClock())


@pytest.fixture
def cache(source: FakeSource) -> Iterator[CredentialCache]:
    cache = CredentialCache(clock=source.clock, source=source)
    yield cache
    cache.close()


def herd(
    count: int, call: Callable[[], Any], source: FakeSource, waiting: Callable[[], bool]
) -> list[Any]:
    """``call`` on ``count`` threads while AWS is held, released once ``waiting()`` is true."""
    results: list[Any] = []
    source.gate.close()
    threads = [threading.Thread(target=lambda: results.append(call())) for _ in range(count)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 10
        while not waiting():  # every thread has missed and joined the flight
            assert time.monotonic() < deadline, "the herd never reached the cache"
            time.sleep(0.001)
    finally:
        source.gate.open()
        for thread in threads:
            thread.join(30)
    assert len(results) == count
    return results


@pytest.mark.parametrize(
    ("config", "endpoint", "apis"),
    [
        (RDS, RDS_HOST, {"AssumeRole": 1}),
        (
            CLUSTER,
            (None, None),
            {"AssumeRole": 1, "GetClusterCredentials": 1, "DescribeClusters": 1},
        ),
        (SERVERLESS, (None, None), {"AssumeRole": 1, "GetCredentials": 1, "GetWorkgroup": 1}),
    ],
    ids=["rds", "redshift cluster, endpoint discovered", "redshift serverless, discovered"],
)
def test_a_herd_of_threads_shares_one_mint_of_each_backend(
    config: AwsIamConfig,
    endpoint: tuple[Any, Any],
    apis: dict[str, int],
    cache: CredentialCache,
    source: FakeSource,
) -> None:
    host, port = endpoint
    auth = auth_for(config, host=host, port=port, cache=cache)

    logins = herd(30, auth.credentials_sync, source, lambda: cache.stats()["misses"] >= 30)

    assert {id(login) for login in logins} == {id(logins[0])}  # one value for all
    assert dict(source.calls) == apis
    assert isinstance(logins[0], DbCredentials)
    assert logins[0].host is not None  # Redshift: the discovered endpoint


@pytest.mark.parametrize("config", [RDS, CLUSTER], ids=["rds", "redshift"])
def test_the_blocking_and_the_async_login_are_one_cached_value(
    config: AwsIamConfig, cache: CredentialCache, source: FakeSource
) -> None:
    auth = auth_for(config, host=RDS_HOST[0] if config is RDS else None, port=5432, cache=cache)

    blocking = auth.credentials_sync()
    awaited = anyio.run(auth.credentials)
    again = auth.credentials_sync()

    assert blocking is awaited is again
    assert source.calls["AssumeRole"] == 1
    assert isinstance(auth, DbAuth)  # the protocol names credentials_sync
