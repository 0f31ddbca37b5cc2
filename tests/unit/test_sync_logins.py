"""Logins for synchronous code: ``DbAuth.credentials_sync`` and ``iampool.superset.do_connect``.

The waiting itself (``Leases.get_blocking``) is tested in test_leases_blocking.py; here, that
every backend keys and mints its blocking logins exactly as its ``credentials()`` does, Redshift's
endpoint discovery included, and what a ``do_connect`` listener gives each synchronous driver.
The fake source is gated from the test; counts, not durations. Real drivers and servers:
tests/integration/test_sync_engines.py and tests/superset/.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest

from iampool import AwsIamConfig, ConfigError, CredentialCache, DbAuth, DbCredentials, auth_for
from iampool._cache import mint_context
from iampool.superset import do_connect

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


def test_a_blocking_login_is_refused_on_the_service_thread_it_would_deadlock(
    cache: CredentialCache,
) -> None:
    auth = auth_for(RDS, host=RDS_HOST[0], port=RDS_HOST[1], cache=cache)

    async def on_the_service_loop() -> DbCredentials:
        return auth.credentials_sync()

    flight = mint_context(cache).service.submit(on_the_service_loop)

    assert flight.join(10)  # it ended: refused, not stuck
    with pytest.raises(RuntimeError, match="service thread"):
        flight.result()


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


@pytest.mark.parametrize(
    ("url", "field"),
    [
        (f"postgresql+psycopg2://app:hunter2@{RDS_HOST[0]}/app", "dsn"),
        (f"postgresql+psycopg2://someone_else@{RDS_HOST[0]}/app", "dsn"),
        (f"postgresql+psycopg2://app@{RDS_HOST[0]}/app?sslmode=disable", "sslmode"),
        (f"postgresql+psycopg2://app@{RDS_HOST[0]}/app?sslmode=prefer", "sslmode"),
        (f"postgresql+asyncpg://app@{RDS_HOST[0]}/app", "url"),
        (f"mysql+mysqldb://app@{RDS_HOST[0]}/app", "url"),
        ("postgresql+psycopg2:///app", "dsn"),
    ],
    ids=["password", "another user", "TLS off", "TLS optional", "async driver", "mysqlclient",
         "no host"],
)  # fmt: skip
def test_do_connect_refuses_a_url_before_any_aws_call(
    url: str, field: str, cache: CredentialCache, source: FakeSource
) -> None:
    with pytest.raises(ConfigError) as info:
        do_connect(url, aws_iam=RDS, cache=cache)

    assert field in info.value.fields
    assert "hunter2" not in str(info.value)
    assert sum(source.calls.values()) == 0


def connect_kwargs(url: str, config: AwsIamConfig, cache: CredentialCache, **given: Any) -> Any:
    """The keyword arguments a driver gets once the listener has run (SQLAlchemy's cparams)."""
    cparams = dict(given)
    do_connect(url, aws_iam=config, cache=cache)(None, None, [], cparams)
    return cparams


def test_do_connect_gives_psycopg2_a_token_and_tls_for_the_url_endpoint(
    cache: CredentialCache, source: FakeSource
) -> None:
    url = f"postgresql+psycopg2://app@{RDS_HOST[0]}:5432/app?sslmode=verify-full"
    # SQLAlchemy 1.4 spells the database "database", 2.x "dbname"; a stray host is replaced.
    cparams = connect_kwargs(url, RDS, cache, host="elsewhere", database="app")

    assert cparams.keys() == {
        "host", "port", "user", "password", "dbname", "sslmode", "sslrootcert", "gssencmode",
        "hostaddr",
    }  # fmt: skip
    assert (cparams["host"], cparams["port"], cparams["dbname"]) == (RDS_HOST[0], 5432, "app")
    assert (cparams["sslmode"], cparams["gssencmode"]) == ("verify-full", "disable")
    assert cparams["sslrootcert"] == "system"  # verified against the system's trust store
    assert cparams["user"] == "app"
    signed_for = f"{RDS_HOST[0]}:5432/?Action=connect&DBUser=app" in cparams["password"]
    assert signed_for  # (a failure must not print the token)
    assert source.calls["AssumeRole"] == 1


def test_do_connect_gives_pymysql_a_tls_context_and_drops_its_other_spellings(
    cache: CredentialCache,
) -> None:
    url = f"mysql+pymysql://app@{RDS_HOST[0]}:3306/app?sslmode=verify-full"
    # SQLAlchemy hands PyMySQL the URL's query as keywords, which PyMySQL does not take.
    cparams = connect_kwargs(url, RDS, cache, db="app", passwd="stale", sslmode="verify-full")

    assert cparams.keys() == {"host", "port", "user", "password", "database", "ssl"}
    assert cparams["ssl"].check_hostname  # verify-full
    assert isinstance(cparams["ssl"], ssl.SSLContext)
    assert cparams["database"] == "app"
    signed_for = cparams["password"].startswith(f"{RDS_HOST[0]}:3306/?Action=connect")
    assert signed_for


def test_do_connect_gives_redshift_connector_the_login_and_endpoint_from_the_api(
    cache: CredentialCache, source: FakeSource
) -> None:
    cluster = CLUSTER
    cparams = connect_kwargs("redshift+redshift_connector://", cluster, cache)

    assert (cparams["host"], cparams["port"]) == source.endpoint  # DescribeClusters
    assert cparams["user"] == "IAM:report"  # as GetClusterCredentials names it
    issued = cparams["password"] == source.passwords[0]
    assert issued
    assert (cparams["ssl"], cparams["sslmode"], cparams["iam"]) == (True, "verify-ca", False)
    assert dict(source.calls) == {
        "AssumeRole": 1, "GetClusterCredentials": 1, "DescribeClusters": 1
    }  # fmt: skip


def test_do_connect_refuses_a_ca_file_redshift_connector_cannot_take(
    cache: CredentialCache,
) -> None:
    cluster = {**ROLE, "db_username": "app", "cluster_identifier": "analytics", "db_name": "dev"}
    url = "redshift+redshift_connector://?sslmode=verify-full&sslrootcert=/etc/ca.pem"

    with pytest.raises(ConfigError) as info:
        do_connect(url, aws_iam=cluster, cache=cache)

    assert info.value.fields == ["sslrootcert"]
