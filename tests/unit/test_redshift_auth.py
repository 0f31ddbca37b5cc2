"""RedshiftAuth: how temporary passwords are minted, shared, reused, refreshed and keyed.

The Redshift calls are fakes behind a ``RedshiftApi`` pair and the clock is fake; the real calls
(GetClusterCredentials, GetCredentials, DescribeClusters, GetWorkgroup) are exercised against
FakeAws in tests/integration/test_redshift.py.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable, Iterator
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
from iampool._aws import AwsApi, AwsCredentials, RedshiftLogin
from iampool.auth import RedshiftAuth
from iampool.auth.redshift import PROVISIONED, RedshiftApi
from iampool.auth.serverless import SERVERLESS

from .fakes import START, FakeClock, FakeSource, Gate, settle, wait_until

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
ENDPOINT = ("analytics.abc123.us-east-1.redshift.amazonaws.com", 5439)


class SourceApi(AwsApi):
    """``FakeSource`` where the cache expects an ``AwsApi``: the Redshift backends hand the
    cache's API to their calls. The fakes below ignore it, so no client is ever built."""

    def __init__(self, source: FakeSource) -> None:
        super().__init__()
        self.source = source

    async def assume_role(self, **request: Any) -> AwsCredentials:
        return await self.source.assume_role(**request)

    async def default_credentials(self, region: str) -> AwsCredentials:
        return await self.source.default_credentials(region)

    async def aclose(self) -> None:
        await self.source.aclose()


class FakeRedshift:
    """The two Redshift calls, faked: numbered passwords valid ``password_duration`` seconds.

    ``calls`` counts "login" and "endpoint" as they start; ``logins`` records who asked for what;
    exceptions queued in ``failures`` are raised by the next logins; ``gate`` holds logins.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.calls: Counter[str] = Counter()
        self.logins: list[tuple[str, AwsIamConfig]] = []
        self.failures: deque[BaseException] = deque()
        self.gate = Gate()
        self.passwords: list[str] = []

    def api(self, real: RedshiftApi) -> RedshiftApi:
        """``real``'s name and selector with the fake calls."""
        return RedshiftApi(
            name=real.name, selector=real.selector, login=self.login, endpoint=self.endpoint
        )

    async def login(self, api: AwsApi, aws: AwsCredentials, config: AwsIamConfig) -> RedshiftLogin:
        self.calls["login"] += 1
        self.logins.append((aws.access_key_id, config))
        await self.gate.passage()
        if self.failures:
            raise self.failures.popleft()
        password = f"FakeRedshiftPassword{len(self.passwords) + 1:04d}Zq8"
        self.passwords.append(password)
        user = f"IAM:{config.db_username}" if config.db_username else "IAMR:analytics"
        return RedshiftLogin(user, password, self.clock() + config.password_duration)

    async def endpoint(
        self, api: AwsApi, aws: AwsCredentials, config: AwsIamConfig
    ) -> tuple[str, int]:
        self.calls["endpoint"] += 1
        return ENDPOINT


@pytest.fixture
def redshift(clock: FakeClock) -> Iterator[FakeRedshift]:
    fake = FakeRedshift(clock)
    yield fake
    fake.gate.open()


@pytest.fixture
def cache(clock: FakeClock, source: FakeSource) -> Iterator[CredentialCache]:
    cache = CredentialCache(clock=clock, source=SourceApi(source))
    yield cache
    cache.close()


@pytest.fixture
def new_auth(cache: CredentialCache, redshift: FakeRedshift) -> Callable[..., RedshiftAuth]:
    def new(config: AwsIamConfig = CLUSTER, **endpoint: Any) -> RedshiftAuth:
        real = SERVERLESS if config.backend == "redshift-serverless" else PROVISIONED
        return RedshiftAuth(config, redshift.api(real), cache=cache, **endpoint)

    return new


async def test_credentials_are_the_login_the_api_returned_for_the_endpoint(
    new_auth: Callable[..., RedshiftAuth], redshift: FakeRedshift, source: FakeSource
) -> None:
    auth = new_auth(host="gateway.example", port=5440)
    credentials = await auth.credentials()

    assert isinstance(auth, DbAuth)
    assert auth.config is CLUSTER
    assert (credentials.user, credentials.password) == ("IAM:report", redshift.passwords[0])
    assert (credentials.host, credentials.port, credentials.database) == (
        "gateway.example",
        5440,
        "dev",
    )
    # the API's Expiration, although the cache stops serving it 60 s earlier
    assert credentials.expires_at == datetime.fromtimestamp(START + 900, timezone.utc)
    assert redshift.logins == [("ASIAFAKE000000000001", CLUSTER)]  # with the assumed role
    assert source.calls == Counter(AssumeRole=1)
    assert source.requests[0]["ExternalId"] == "ext-51c0"
    assert redshift.calls == Counter(login=1)  # a host was given: no endpoint lookup


async def test_cold_herd_of_200_callers_makes_one_assume_role_and_one_login(
    new_auth: Callable[..., RedshiftAuth],
    redshift: FakeRedshift,
    source: FakeSource,
    cache: CredentialCache,
) -> None:
    auth = new_auth(host="gateway.example")
    results: list[DbCredentials] = []

    async def connect() -> None:
        results.append(await auth.credentials())

    redshift.gate.close()
    async with anyio.create_task_group() as group:
        for _ in range(200):
            group.start_soon(connect)
        await wait_until(lambda: redshift.calls["login"] == 1)
        await wait_until(lambda: cache.stats()["misses"] == 201)  # 200 callers + the STS entry
        redshift.gate.open()

    assert len(results) == 200
    assert all(credentials is results[0] for credentials in results)
    assert redshift.calls == Counter(login=1)
    assert source.calls == Counter(AssumeRole=1)
    stats = cache.stats()
    assert (stats["sts_calls"], stats["api_calls"], stats["errors"]) == (1, 1, 0)


async def test_a_password_is_reused_until_expiration_minus_the_margin_then_minted_anew(
    new_auth: Callable[..., RedshiftAuth],
    redshift: FakeRedshift,
    clock: FakeClock,
    cache: CredentialCache,
) -> None:
    auth = new_auth(host="gateway.example")
    first = await auth.credentials()

    clock.advance(779)  # refresh-ahead starts at 780: (900 - 60 expiry margin) - 60 refresh margin
    assert await auth.credentials() is first
    await settle(cache)
    assert redshift.calls["login"] == 1

    clock.advance(62)  # 841: no longer usable, so callers wait for a new one
    second = await auth.credentials()
    assert second.password != first.password
    assert second.expires_at == datetime.fromtimestamp(START + 841 + 900, timezone.utc)
    assert redshift.calls["login"] == 2


async def test_inside_the_refresh_margin_the_password_is_served_while_one_refresh_runs(
    new_auth: Callable[..., RedshiftAuth],
    redshift: FakeRedshift,
    clock: FakeClock,
    cache: CredentialCache,
) -> None:
    auth = new_auth(host="gateway.example")
    first = await auth.credentials()
    clock.advance(800)
    redshift.gate.close()

    served = [await auth.credentials() for _ in range(100)]  # nobody waits on the refresh
    await wait_until(lambda: redshift.calls["login"] == 2)
    assert all(credentials is first for credentials in served)
    redshift.gate.open()
    await wait_until(lambda: cache.stats()["refreshes"] == 1)

    assert (await auth.credentials()).password == redshift.passwords[1]
    assert redshift.calls["login"] == 2


async def test_without_a_host_the_endpoint_is_looked_up_once_for_every_password(
    new_auth: Callable[..., RedshiftAuth], redshift: FakeRedshift
) -> None:
    auth = new_auth()
    first = await auth.credentials()
    auth.invalidate()
    second = await auth.credentials()

    assert (first.host, first.port) == (second.host, second.port) == ENDPOINT
    assert redshift.calls == Counter(login=2, endpoint=1)


@pytest.mark.parametrize(
    ("block", "port"),
    [({}, 5439), ({"port": 5440}, 5440)],
    ids=["redshift default", "block port"],
)
async def test_a_host_without_a_port_takes_the_block_port_or_5439(
    block: dict[str, Any], port: int, cache: CredentialCache, redshift: FakeRedshift
) -> None:
    config = AwsIamConfig.from_extra({**CLUSTER_BLOCK, **block})
    auth = RedshiftAuth(config, redshift.api(PROVISIONED), cache=cache, host="gateway.example")
    credentials = await auth.credentials()
    assert (credentials.host, credentials.port) == ("gateway.example", port)
    assert redshift.calls["endpoint"] == 0


async def test_invalidate_mints_a_new_password_with_the_same_aws_credentials(
    new_auth: Callable[..., RedshiftAuth], redshift: FakeRedshift, source: FakeSource
) -> None:
    auth = new_auth(host="gateway.example")
    first = await auth.credentials()
    auth.invalidate()
    second = await auth.credentials()

    assert second.password != first.password
    assert redshift.calls["login"] == 2
    assert source.calls == Counter(AssumeRole=1)


async def test_a_failed_login_fails_every_waiter_and_is_not_cached(
    new_auth: Callable[..., RedshiftAuth], redshift: FakeRedshift, cache: CredentialCache
) -> None:
    auth = new_auth(host="gateway.example")
    denied = CredentialError(
        "Failed to get Redshift cluster credentials for cluster analytics in us-east-1: "
        "AccessDenied.",
        code="AccessDenied",
    )
    redshift.failures.append(denied)
    redshift.gate.close()
    errors: list[BaseException] = []

    async def connect() -> None:
        try:
            await auth.credentials()
        except CredentialError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as group:
        for _ in range(20):
            group.start_soon(connect)
        await wait_until(lambda: redshift.calls["login"] == 1)
        redshift.gate.open()

    assert errors == [denied] * 20
    assert (await auth.credentials()).password == redshift.passwords[0]
    assert redshift.calls["login"] == 2
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
    change: dict[str, Any], new_auth: Callable[..., RedshiftAuth], redshift: FakeRedshift
) -> None:
    base = new_auth(host="gateway.example")
    variant = new_auth(AwsIamConfig.from_extra({**CLUSTER_BLOCK, **change}), host="gateway.example")
    same = new_auth(AwsIamConfig.from_extra(dict(CLUSTER_BLOCK)), host="gateway.example")

    assert (await base.credentials()).password != (await variant.credentials()).password
    assert await same.credentials() is await base.credentials()
    assert redshift.calls["login"] == 2


async def test_different_endpoints_get_their_own_password(
    new_auth: Callable[..., RedshiftAuth], redshift: FakeRedshift
) -> None:
    passwords = {
        (await new_auth(**endpoint).credentials()).password
        for endpoint in ({}, {"host": "a.example"}, {"host": "a.example", "port": 5440})
    }
    assert len(passwords) == 3
    assert redshift.calls == Counter(login=3, endpoint=1)


async def test_provisioned_and_serverless_share_the_role_credentials_not_the_passwords(
    new_auth: Callable[..., RedshiftAuth], redshift: FakeRedshift, source: FakeSource
) -> None:
    cluster = await new_auth(CLUSTER, host="gateway.example").credentials()
    workgroup = await new_auth(WORKGROUP, host="gateway.example").credentials()

    assert (cluster.user, workgroup.user) == ("IAM:report", "IAMR:analytics")
    assert cluster.password != workgroup.password
    assert [access_key for access_key, _ in redshift.logins] == ["ASIAFAKE000000000001"] * 2
    assert source.calls == Counter(AssumeRole=1)


async def test_auth_for_builds_the_redshift_backend_from_the_selector(
    cache: CredentialCache,
) -> None:
    cluster = auth_for(CLUSTER, cache=cache)
    workgroup = auth_for(WORKGROUP, cache=cache)

    assert isinstance(cluster, RedshiftAuth)
    assert isinstance(workgroup, RedshiftAuth)
    assert repr(cluster) == "RedshiftAuth('cluster analytics', region='us-east-1')"
    assert repr(workgroup) == "RedshiftAuth('workgroup analytics-wg', region='us-east-1')"


@pytest.mark.parametrize(("config", "api"), [(WORKGROUP, PROVISIONED), (CLUSTER, SERVERLESS)])
def test_redshift_auth_needs_the_selector_its_api_calls_for(
    config: AwsIamConfig, api: RedshiftApi, cache: CredentialCache
) -> None:
    with pytest.raises(ConfigError, match=f"needs a {api.name}") as caught:
        RedshiftAuth(config, api, cache=cache)
    assert caught.value.fields == ["backend"]


async def test_reprs_stats_and_logs_contain_no_password(
    new_auth: Callable[..., RedshiftAuth],
    redshift: FakeRedshift,
    clock: FakeClock,
    cache: CredentialCache,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="iampool")
    auth = new_auth(host="gateway.example")
    credentials = await auth.credentials()
    clock.advance(800)  # a background refresh that fails is logged as a warning
    redshift.failures.append(CredentialError("Failed to get Redshift cluster credentials: x."))
    await auth.credentials()
    await wait_until(lambda: any(r.levelno == logging.WARNING for r in caplog.records))

    texts = [repr(credentials), str(credentials), repr(auth), repr(cache), str(cache.stats())]
    texts += [record.getMessage() for record in caplog.records]
    assert "<redacted>" in repr(credentials)
    for text in texts:
        assert credentials.password not in text
        assert "ext-51c0" not in text
