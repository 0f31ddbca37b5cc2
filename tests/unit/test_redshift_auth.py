"""RedshiftAuth: how temporary passwords are minted, shared, reused, refreshed and keyed.

The Redshift calls are the fake source's (``fakes.FakeSource``) and the clock is fake; the real
calls (GetClusterCredentials, GetCredentials, DescribeClusters, GetWorkgroup) are exercised
against FakeAws in tests/integration/test_redshift.py.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import anyio
import pytest

from iampool import (
    AwsIamConfig,
    ConfigError,
    CredentialCache,
    CredentialError,
    DbAuth,
    DbCredentials,
    auth_for,
)
from iampool._cache import mint_context
from iampool.auth import RedshiftAuth

from .fakes import START, FakeClock, FakeSource, settle, wait_until

pytestmark = pytest.mark.anyio

ROLE_ARN = "arn:aws:iam::123456789012:role/analytics"
CLUSTER_BLOCK = {
    "enabled": True,
    "region": "us-east-1",
    "role_arn": ROLE_ARN,
    "external_id": "ext-51c0",
    "db_username": "report",
    "cluster_identifier": "analytics",
    "db_name": "dev",
}
WORKGROUP_BLOCK = {
    "enabled": True,
    "region": "us-east-1",
    "role_arn": ROLE_ARN,
    "external_id": "ext-51c0",
    "workgroup_name": "analytics-wg",
    "db_name": "dev",
}
CLUSTER = AwsIamConfig.from_extra(CLUSTER_BLOCK)
WORKGROUP = AwsIamConfig.from_extra(WORKGROUP_BLOCK)
ENDPOINT = ("analytics.abc123.us-east-1.redshift.amazonaws.com", 5439)  # FakeSource.endpoint


CLUSTER_LOGIN = {
    "region": "us-east-1",
    "cluster_identifier": "analytics",
    "db_user": "report",
    "db_name": "dev",
    "duration": 900,
    "auto_create": False,
    "db_groups": (),
}


@pytest.fixture
def new_auth(cache: CredentialCache) -> Callable[..., RedshiftAuth]:
    def new(config: AwsIamConfig = CLUSTER, **endpoint: Any) -> RedshiftAuth:
        return RedshiftAuth(config, context=mint_context(cache), **endpoint)

    return new


async def test_credentials_are_the_login_the_api_returned_for_the_endpoint(
    new_auth: Callable[..., RedshiftAuth], source: FakeSource
) -> None:
    auth = new_auth(host="gateway.example", port=5440)
    credentials = await auth.credentials()

    assert isinstance(auth, DbAuth)
    assert auth.config is CLUSTER
    assert (credentials.user, credentials.password) == ("IAM:report", source.passwords[0])
    assert (credentials.host, credentials.port, credentials.database) == (
        "gateway.example",
        5440,
        "dev",
    )
    # the API's Expiration, although the cache stops serving it 60 s earlier
    assert credentials.expires_at == datetime.fromtimestamp(START + 900, timezone.utc)
    assert source.logins == [("ASIAFAKE000000000001", CLUSTER_LOGIN)]  # with the assumed role
    assert source.requests[0]["ExternalId"] == "ext-51c0"
    # a host was given: no endpoint lookup
    assert source.calls == Counter(AssumeRole=1, GetClusterCredentials=1)


async def test_cold_herd_of_200_callers_makes_one_assume_role_and_one_login(
    new_auth: Callable[..., RedshiftAuth],
    source: FakeSource,
    cache: CredentialCache,
) -> None:
    auth = new_auth(host="gateway.example")
    results: list[DbCredentials] = []

    async def connect() -> None:
        results.append(await auth.credentials())

    source.api_gate.close()
    async with anyio.create_task_group() as group:
        for _ in range(200):
            group.start_soon(connect)
        await wait_until(lambda: source.calls["GetClusterCredentials"] == 1)
        await wait_until(lambda: cache.stats()["misses"] == 201)  # 200 callers + the STS entry
        source.api_gate.open()

    assert len(results) == 200
    assert all(credentials is results[0] for credentials in results)
    assert source.calls == Counter(AssumeRole=1, GetClusterCredentials=1)
    stats = cache.stats()
    assert (stats["sts_calls"], stats["api_calls"], stats["errors"]) == (1, 1, 0)


async def test_a_password_is_reused_until_expiration_minus_the_margin_then_minted_anew(
    new_auth: Callable[..., RedshiftAuth],
    source: FakeSource,
    clock: FakeClock,
    cache: CredentialCache,
) -> None:
    auth = new_auth(host="gateway.example")
    first = await auth.credentials()

    clock.advance(779)  # refresh-ahead starts at 780: (900 - 60 expiry margin) - 60 refresh margin
    assert await auth.credentials() is first
    await settle(cache)
    assert source.calls["GetClusterCredentials"] == 1

    clock.advance(62)  # 841: no longer usable, so callers wait for a new one
    second = await auth.credentials()
    assert second.password != first.password
    assert second.expires_at == datetime.fromtimestamp(START + 841 + 900, timezone.utc)
    assert source.calls["GetClusterCredentials"] == 2


async def test_inside_the_refresh_margin_the_password_is_served_while_one_refresh_runs(
    new_auth: Callable[..., RedshiftAuth],
    source: FakeSource,
    clock: FakeClock,
    cache: CredentialCache,
) -> None:
    auth = new_auth(host="gateway.example")
    first = await auth.credentials()
    clock.advance(800)
    source.api_gate.close()

    served = [await auth.credentials() for _ in range(100)]  # nobody waits on the refresh
    await wait_until(lambda: source.calls["GetClusterCredentials"] == 2)
    assert all(credentials is first for credentials in served)
    source.api_gate.open()
    await wait_until(lambda: cache.stats()["refreshes"] == 1)

    assert (await auth.credentials()).password == source.passwords[1]
    assert source.calls["GetClusterCredentials"] == 2


async def test_without_a_host_the_endpoint_is_looked_up_once_for_every_password(
    new_auth: Callable[..., RedshiftAuth], source: FakeSource
) -> None:
    auth = new_auth()
    first = await auth.credentials()
    auth.invalidate()
    second = await auth.credentials()

    assert (first.host, first.port) == (second.host, second.port) == ENDPOINT
    assert source.calls == Counter(AssumeRole=1, GetClusterCredentials=2, DescribeClusters=1)


@pytest.mark.parametrize(
    ("block", "port"),
    [({}, 5439), ({"port": 5440}, 5440)],
    ids=["redshift default", "block port"],
)
async def test_a_host_without_a_port_takes_the_block_port_or_5439(
    block: dict[str, Any], port: int, new_auth: Callable[..., RedshiftAuth], source: FakeSource
) -> None:
    auth = new_auth(AwsIamConfig.from_extra({**CLUSTER_BLOCK, **block}), host="gateway.example")
    credentials = await auth.credentials()
    assert (credentials.host, credentials.port) == ("gateway.example", port)
    assert source.calls["DescribeClusters"] == 0


async def test_invalidate_mints_a_new_password_with_the_same_aws_credentials(
    new_auth: Callable[..., RedshiftAuth], source: FakeSource
) -> None:
    auth = new_auth(host="gateway.example")
    first = await auth.credentials()
    auth.invalidate()
    second = await auth.credentials()

    assert second.password != first.password
    assert source.calls == Counter(AssumeRole=1, GetClusterCredentials=2)


async def test_a_failed_login_fails_every_waiter_and_is_not_cached(
    new_auth: Callable[..., RedshiftAuth], source: FakeSource, cache: CredentialCache
) -> None:
    auth = new_auth(host="gateway.example")
    denied = CredentialError(
        "Failed to get Redshift cluster credentials for cluster analytics in us-east-1: "
        "AccessDenied.",
        code="AccessDenied",
    )
    source.api_failures.append(denied)
    source.api_gate.close()
    errors: list[BaseException] = []

    async def connect() -> None:
        try:
            await auth.credentials()
        except CredentialError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as group:
        for _ in range(20):
            group.start_soon(connect)
        await wait_until(lambda: source.calls["GetClusterCredentials"] == 1)
        source.api_gate.open()

    assert errors == [denied] * 20
    assert (await auth.credentials()).password == source.passwords[0]
    assert source.calls["GetClusterCredentials"] == 2
    assert cache.stats()["errors"] == 1


@pytest.mark.parametrize(
    "change",
    [
        {"db_username": "etl"},
        {"db_name": "prod"},
        {"db_groups": ["analysts"]},
        {"auto_create": True},
        {"password_duration": 3600},
        {"cluster_identifier": "other"},
        {"region": "eu-west-1"},
        {"external_id": "ext-other"},
    ],
    ids=lambda change: next(iter(change)),
)
async def test_configurations_differing_in_a_password_field_never_share_a_password(
    change: dict[str, Any], new_auth: Callable[..., RedshiftAuth], source: FakeSource
) -> None:
    base = new_auth(host="gateway.example")
    variant = new_auth(AwsIamConfig.from_extra({**CLUSTER_BLOCK, **change}), host="gateway.example")
    same = new_auth(AwsIamConfig.from_extra(dict(CLUSTER_BLOCK)), host="gateway.example")

    assert (await base.credentials()).password != (await variant.credentials()).password
    assert await same.credentials() is await base.credentials()
    assert source.calls["GetClusterCredentials"] == 2


async def test_different_endpoints_get_their_own_password(
    new_auth: Callable[..., RedshiftAuth], source: FakeSource
) -> None:
    passwords = {
        (await new_auth(**endpoint).credentials()).password
        for endpoint in ({}, {"host": "a.example"}, {"host": "a.example", "port": 5440})
    }
    assert len(passwords) == 3
    assert source.calls == Counter(AssumeRole=1, GetClusterCredentials=3, DescribeClusters=1)


async def test_provisioned_and_serverless_share_the_role_credentials_not_the_passwords(
    new_auth: Callable[..., RedshiftAuth], source: FakeSource
) -> None:
    cluster = await new_auth(CLUSTER, host="gateway.example").credentials()
    workgroup = await new_auth(WORKGROUP, host="gateway.example").credentials()

    assert (cluster.user, workgroup.user) == ("IAM:report", "IAMR:analytics")
    assert cluster.password != workgroup.password
    assert [access_key for access_key, _ in source.logins] == ["ASIAFAKE000000000001"] * 2
    assert source.calls == Counter(AssumeRole=1, GetClusterCredentials=1, GetCredentials=1)


async def test_auth_for_builds_the_redshift_backend_from_the_selector(
    cache: CredentialCache,
) -> None:
    cluster = auth_for(CLUSTER, cache=cache)
    workgroup = auth_for(WORKGROUP, cache=cache)

    assert isinstance(cluster, RedshiftAuth)
    assert isinstance(workgroup, RedshiftAuth)
    assert repr(cluster) == "RedshiftAuth('cluster analytics', region='us-east-1')"
    assert repr(workgroup) == "RedshiftAuth('workgroup analytics-wg', region='us-east-1')"


def test_redshift_auth_needs_a_cluster_or_a_workgroup(cache: CredentialCache) -> None:
    rds = AwsIamConfig.from_extra({"enabled": True, "region": "us-east-1", "db_username": "app"})
    with pytest.raises(
        ConfigError, match="needs a cluster_identifier or a workgroup_name"
    ) as caught:
        RedshiftAuth(rds, context=mint_context(cache))
    assert caught.value.fields == ["backend"]


async def test_reprs_stats_and_logs_contain_no_password(
    new_auth: Callable[..., RedshiftAuth],
    source: FakeSource,
    clock: FakeClock,
    cache: CredentialCache,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="iampool")
    auth = new_auth(host="gateway.example")
    credentials = await auth.credentials()
    clock.advance(800)  # a background refresh that fails is logged as a warning
    source.api_failures.append(CredentialError("Failed to get Redshift cluster credentials: x."))
    await auth.credentials()
    await wait_until(lambda: any(r.levelno == logging.WARNING for r in caplog.records))

    texts = [repr(credentials), str(credentials), repr(auth), repr(cache), str(cache.stats())]
    texts += [record.getMessage() for record in caplog.records]
    assert "<redacted>" in repr(credentials)
    for text in texts:
        assert credentials.password not in text
        assert "ext-51c0" not in text
