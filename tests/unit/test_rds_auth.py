"""RdsIamAuth: locally signed RDS tokens, how long each is reused, keys, and secrets kept out of
reprs and logs. The signature itself is verified against a real AWS stand-in in
tests/integration/test_credentials_aws.py."""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from urllib.parse import parse_qs, urlsplit

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
from iampool.auth import RdsIamAuth

from .fakes import START, FakeClock, FakeSource, aws_credentials, wait_until, without_waiting

pytestmark = pytest.mark.anyio

BLOCK = {
    "enabled": True,
    "region": "us-east-1",
    "role_arn": "arn:aws:iam::123456789012:role/app-db",
    "external_id": "ext-7f3a9c",
    "db_username": "app",
}
ROLE = AwsIamConfig.from_extra(BLOCK)
HOST = "app.cluster-abc.us-east-1.rds.amazonaws.com"


async def test_token_is_a_presigned_connect_url_for_the_endpoint_user_and_region(
    cache: CredentialCache, source: FakeSource
) -> None:
    auth = auth_for(ROLE, host=HOST, port=5432, cache=cache)
    credentials = await auth.credentials()

    assert isinstance(auth, RdsIamAuth)
    assert isinstance(auth, DbAuth)
    assert (credentials.user, credentials.host, credentials.port) == ("app", HOST, 5432)
    assert credentials.database is None
    assert credentials.expires_at == datetime.fromtimestamp(START + 900, timezone.utc)

    url = urlsplit(f"https://{credentials.password}")
    assert (url.hostname, url.port, url.path) == (HOST, 5432, "/")
    query = {name: values[0] for name, values in parse_qs(url.query).items()}
    assert query["Action"] == "connect"
    assert query["DBUser"] == "app"
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert query["X-Amz-Expires"] == "900"
    assert query["X-Amz-SignedHeaders"] == "host"
    access_key, _, region, service, terminal = query["X-Amz-Credential"].split("/")
    assert (access_key, region, service, terminal) == (
        "ASIAFAKE000000000001",
        "us-east-1",
        "rds-db",
        "aws4_request",
    )
    assert query["X-Amz-Security-Token"] == source.secrets[1]  # the session token rides along
    assert re.fullmatch(r"[0-9a-f]{64}", query["X-Amz-Signature"])
    assert source.secrets[0] not in credentials.password  # the secret key never does


async def test_token_expiry_is_capped_by_credentials_that_expire_sooner(
    cache: CredentialCache, source: FakeSource
) -> None:
    source.lifetime = 300.0
    credentials = await auth_for(ROLE, host=HOST, port=5432, cache=cache).credentials()
    assert credentials.expires_at == datetime.fromtimestamp(START + 300, timezone.utc)


@pytest.mark.parametrize(
    ("token_reuse", "lifetime", "signed_at", "usable_until"),
    [
        pytest.param(600.0, 3600.0, 0.0, 600.0, id="token_reuse decides"),
        pytest.param(1200.0, 3600.0, 0.0, 840.0, id="token lifetime 900 minus the margin"),
        pytest.param(600.0, 400.0, 0.0, 340.0, id="credentials expiry minus the margin"),
        pytest.param(600.0, 900.0, 500.0, 840.0, id="credentials expiry when signed late"),
        # 200 s credentials are served until 150 (margin: a quarter of their life); a token
        # signed at 140 ends there too, not at 185 (a quarter of what was left at signing).
        pytest.param(600.0, 200.0, 140.0, 150.0, id="never past the credentials' own cutoff"),
    ],
)
async def test_token_is_reused_until_the_earliest_of_reuse_lifetime_and_credentials_expiry(
    new_cache: Callable[..., CredentialCache],
    source: FakeSource,
    clock: FakeClock,
    token_reuse: float,
    lifetime: float,
    signed_at: float,
    usable_until: float,
) -> None:
    # refresh_margin=0 turns off refresh-ahead, so the end of usable life is a sharp edge.
    cache = new_cache(ttl=3600, refresh_margin=0, token_reuse=token_reuse)
    source.lifetime = lifetime
    auth = auth_for(ROLE, host=HOST, port=5432, cache=cache)
    await auth.credentials()
    clock.advance(signed_at)
    auth.invalidate()
    token = await auth.credentials()
    signed = cache.stats()["tokens_signed"]

    clock.advance(usable_until - signed_at - 0.5)
    assert await auth.credentials() is token
    assert cache.stats()["tokens_signed"] == signed
    clock.advance(1.0)
    assert await auth.credentials() is not token
    assert cache.stats()["tokens_signed"] == signed + 1


async def test_a_token_due_for_refresh_is_resigned_at_once_without_waiting_on_aws(
    new_cache: Callable[..., CredentialCache], source: FakeSource, clock: FakeClock
) -> None:
    cache = new_cache(token_reuse=300)  # the token falls due long before the STS credentials
    auth = auth_for(ROLE, host=HOST, port=5432, cache=cache)
    first = await auth.credentials()
    clock.advance(245)  # token_reuse 300 - refresh_margin 60: the token is due
    [second] = await without_waiting(auth.credentials)  # signed on this thread, no AWS call
    assert second is not first
    assert second.expires_at > first.expires_at  # a new token (signed at the wall clock's time)
    assert await auth.credentials() is second
    stats = cache.stats()
    assert (stats["tokens_signed"], stats["refreshes"], stats["misses"]) == (2, 1, 2)
    assert source.calls == Counter(AssumeRole=1)


async def test_a_missing_token_is_signed_at_once_when_the_credentials_are_cached(
    cache: CredentialCache, source: FakeSource
) -> None:
    await auth_for(ROLE, host=HOST, port=5432, cache=cache).credentials()
    other = auth_for(ROLE, host="replica.example.com", port=5432, cache=cache)
    [credentials] = await without_waiting(other.credentials)
    assert credentials.host == "replica.example.com"
    assert source.calls == Counter(AssumeRole=1)
    assert cache.stats()["tokens_signed"] == 2


async def test_invalidate_makes_the_next_call_sign_a_new_token_with_the_same_credentials(
    cache: CredentialCache, source: FakeSource, clock: FakeClock
) -> None:
    auth = auth_for(ROLE, host=HOST, port=5432, cache=cache)
    first = await auth.credentials()
    assert await auth.credentials() is first
    clock.advance(1)
    auth.invalidate()
    second = await auth.credentials()
    assert second is not first
    assert second.expires_at > first.expires_at
    stats = cache.stats()
    assert (stats["tokens_signed"], stats["sts_calls"]) == (2, 1)


async def test_cold_token_herd_with_warm_credentials_signs_once(
    cache: CredentialCache, source: FakeSource
) -> None:
    await auth_for(ROLE, host="other.example.com", port=5432, cache=cache).credentials()
    auth = auth_for(ROLE, host=HOST, port=5432, cache=cache)
    results: list[DbCredentials] = []

    async def connect() -> None:
        results.append(await auth.credentials())

    async with anyio.create_task_group() as tg:
        for _ in range(200):
            tg.start_soon(connect)
    assert all(credentials is results[0] for credentials in results)
    assert cache.stats()["tokens_signed"] == 2
    assert source.calls == Counter(AssumeRole=1)


async def test_authenticators_differing_in_a_key_field_never_share_a_token(
    cache: CredentialCache, source: FakeSource
) -> None:
    variants = [
        RdsIamAuth(ROLE, host=HOST, port=5432, context=mint_context(cache)),
        RdsIamAuth(ROLE, host="replica.example.com", port=5432, context=mint_context(cache)),
        RdsIamAuth(ROLE, host=HOST, port=3306, context=mint_context(cache)),
        RdsIamAuth(
            AwsIamConfig.from_extra({**BLOCK, "db_username": "report"}),
            host=HOST,
            port=5432,
            context=mint_context(cache),
        ),
        RdsIamAuth(  # the host names no region (a CNAME): the block's is signed for
            AwsIamConfig.from_extra({**BLOCK, "region": "eu-west-1"}),
            host="replica.example.com",
            port=5432,
            context=mint_context(cache),
        ),
        RdsIamAuth(
            AwsIamConfig.from_extra({**BLOCK, "external_id": "ext-other"}),
            host=HOST,
            port=5432,
            context=mint_context(cache),
        ),
    ]
    tokens = {id(await auth.credentials()) for auth in variants}
    assert len(tokens) == len(variants)
    assert cache.stats()["tokens_signed"] == len(variants)
    assert source.calls == Counter(AssumeRole=3)  # role keys: base, eu-west-1, ext-other

    again = RdsIamAuth(
        ROLE, host=HOST, port=5432, context=mint_context(cache)
    )  # same key: same token
    assert await again.credentials() is await variants[0].credentials()
    assert cache.stats()["tokens_signed"] == len(variants)


async def test_same_account_config_signs_with_the_default_chain(
    cache: CredentialCache, source: FakeSource
) -> None:
    config = AwsIamConfig.from_extra({"enabled": True, "region": "us-east-1", "db_username": "a"})
    credentials = await auth_for(config, host=HOST, port=3306, cache=cache).credentials()
    assert "X-Amz-Credential=ASIAFAKE000000000001%2F" in credentials.password
    assert source.calls == Counter(DefaultChain=1)
    stats = cache.stats()
    assert (stats["sts_calls"], stats["tokens_signed"]) == (0, 1)


async def test_auth_for_takes_the_port_from_the_block_when_not_given(
    cache: CredentialCache,
) -> None:
    auth = auth_for({**BLOCK, "port": 3306}, host=HOST, cache=cache)
    assert isinstance(auth, RdsIamAuth)
    assert auth.endpoint == (HOST, 3306)


def test_auth_for_rds_lists_every_missing_endpoint_field(cache: CredentialCache) -> None:
    with pytest.raises(ConfigError) as caught:
        auth_for(ROLE, cache=cache)
    assert caught.value.fields == ["host", "port"]


def test_rds_auth_refuses_configurations_it_cannot_sign_for(cache: CredentialCache) -> None:
    redshift = AwsIamConfig.from_extra(
        {**BLOCK, "cluster_identifier": "analytics", "db_name": "dev"}
    )
    with pytest.raises(ConfigError) as caught:
        RdsIamAuth(redshift, host="", port=5439, context=mint_context(cache))
    assert caught.value.fields == ["backend", "host"]


# -- secrets ---------------------------------------------------------------------------------


async def test_reprs_stats_messages_and_logs_contain_no_secret(
    new_cache: Callable[..., CredentialCache],
    source: FakeSource,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="iampool")
    cache = new_cache(deadline=0.2)
    auth = auth_for(ROLE, host=HOST, port=5432, cache=cache)
    credentials = await auth.credentials()
    aws = await aws_credentials(cache, ROLE)
    clock.advance(550)  # a background refresh that fails: logged as a WARNING
    source.failures.append(CredentialError("Unable to assume IAM role app-db: Throttling."))
    await auth.credentials()
    await wait_until(lambda: any(r.levelno == logging.WARNING for r in caplog.records))
    clock.advance(3600)  # everything expired; the next fetch hangs past the deadline
    source.hang = True
    with pytest.raises(CredentialError) as timeout:
        await auth.credentials()

    signature = parse_qs(urlsplit(f"//{credentials.password}").query)["X-Amz-Signature"][0]
    secrets = [*source.secrets, signature, credentials.password]
    assert len(source.secrets) >= 2
    texts = [
        repr(credentials),
        str(credentials),
        repr(aws),
        repr(auth),
        repr(cache),
        repr(ROLE),
        str(cache.stats()),
        str(timeout.value),
        caplog.text,
        *(record.getMessage() for record in caplog.records),
    ]
    assert "<redacted>" in repr(credentials)
    assert aws.access_key_id in repr(aws)  # the key id identifies, it is not secret
    assert any(r.levelno == logging.INFO for r in caplog.records)  # "obtained ..." was logged
    leaks = [(secret, text) for secret in secrets for text in texts if secret in text]
    assert leaks == []


async def test_creating_authenticators_prepares_the_aws_client_once_per_region(
    cache: CredentialCache, source: FakeSource
) -> None:
    for index in range(100):
        auth_for(ROLE, host=f"db-{index}.example.com", port=5432, cache=cache)
    await wait_until(lambda: source.prepared == ["us-east-1"])
    assert source.calls == Counter()  # building a client is not an AWS call


async def test_the_token_after_a_refused_login_is_signed_with_credentials_not_due_for_refresh(
    cache: CredentialCache, source: FakeSource, clock: FakeClock
) -> None:
    auth = auth_for(ROLE, host=HOST, port=5432, cache=cache)
    await auth.credentials()
    clock.advance(545)  # the STS credentials (ttl 600) are due for their refresh since 540
    source.gate.close()
    auth.invalidate()  # the database refused the token: the pool retries once
    assert await without_waiting(auth.credentials) == []  # it waits for the new credentials
    source.gate.open()
    retried = await auth.credentials()

    assert "X-Amz-Credential=ASIAFAKE000000000002%2F" in retried.password
    assert source.calls == Counter(AssumeRole=2)
    # An ordinary miss does not wait: it signs with the credentials at hand.
    other = auth_for(ROLE, host="replica.example.com", port=5432, cache=cache)
    assert len(await without_waiting(other.credentials)) == 1
