"""DsqlAuth: Aurora DSQL tokens signed locally, the role's action, the region from the host, how
long each is reused, keys, and the configuration that selects it. The gateway verifies these
tokens for real in tests/integration/test_dsql.py."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any
from unittest import mock
from urllib.parse import parse_qs, urlsplit

import anyio
import botocore.session
import pytest

from iampool import AwsIamConfig, ConfigError, CredentialCache, DbAuth, auth_for
from iampool._aws import AwsCredentials
from iampool._endpoints import endpoint_name
from iampool._sigv4 import sign_dsql_token
from iampool.auth import DsqlAuth
from iampool.pools import resolve

from .fakes import START, FakeClock, FakeSource

pytestmark = pytest.mark.anyio

HOST = "abcdefghijklmnopqrst12345.dsql.eu-west-1.on.aws"
BLOCK = {
    "enabled": True,
    "dsql": True,
    "role_arn": "arn:aws:iam::123456789012:role/app-db",
    "db_username": "admin",
}
ADMIN = AwsIamConfig.from_extra(BLOCK)
APP = AwsIamConfig.from_extra({**BLOCK, "db_username": "app"})


def token_query(token: str) -> tuple[str, dict[str, str]]:
    url = urlsplit(f"https://{token}")
    return str(url.netloc), {name: values[0] for name, values in parse_qs(url.query).items()}


@pytest.mark.parametrize(
    ("admin", "botocore_method"),
    [
        (False, "generate_db_connect_auth_token"),
        (True, "generate_db_connect_admin_auth_token"),
    ],
)
def test_tokens_are_what_botocores_dsql_signer_produces(admin: bool, botocore_method: str) -> None:
    credentials = AwsCredentials("ASIAEXAMPLE", "secret-key", "session-token", None, "test")
    client = botocore.session.get_session().create_client(
        "dsql",
        region_name="eu-west-1",
        aws_access_key_id="ASIAEXAMPLE",
        aws_secret_access_key="secret-key",
        aws_session_token="session-token",
    )
    signed_at = dt.datetime(2026, 11, 30, 12, 0, 0)
    with mock.patch("botocore.auth.get_current_datetime", return_value=signed_at):
        expected = getattr(client, botocore_method)(HOST, "eu-west-1", 3600)
    now = signed_at.replace(tzinfo=dt.timezone.utc).timestamp()
    ours = sign_dsql_token(credentials, HOST, "eu-west-1", admin=admin, expires=3600, now=now)

    assert ours == expected


@pytest.mark.parametrize(("config", "action"), [(ADMIN, "DbConnectAdmin"), (APP, "DbConnect")])
async def test_admin_gets_a_db_connect_admin_token_other_roles_a_db_connect_one(
    cache: CredentialCache, config: AwsIamConfig, action: str
) -> None:
    auth = auth_for(config, host=HOST, port=5432, cache=cache)
    credentials = await auth.credentials()

    assert isinstance(auth, DsqlAuth)
    assert isinstance(auth, DbAuth)
    assert (credentials.user, credentials.host, credentials.port) == (
        config.db_username,
        HOST,
        5432,
    )
    netloc, query = token_query(credentials.password)
    assert netloc == HOST  # no port: a DSQL token names the cluster's host only
    assert query["Action"] == action
    assert "DBUser" not in query
    assert query["X-Amz-Expires"] == "900"
    _, _, region, service, _ = query["X-Amz-Credential"].split("/")
    assert (region, service) == ("eu-west-1", "dsql")


def test_the_region_comes_from_the_host_when_the_block_omits_it(cache: CredentialCache) -> None:
    assert ADMIN.region == ""
    assert ADMIN.backend == "dsql"

    auth = auth_for(ADMIN, host=HOST, port=5432, cache=cache)

    assert auth.config.region == "eu-west-1"
    assert "eu-west-1" in repr(auth)


def test_a_region_in_the_block_that_disagrees_with_the_host_is_a_config_error(
    cache: CredentialCache,
) -> None:
    config = AwsIamConfig.from_extra({**BLOCK, "region": "us-east-2"})

    with pytest.raises(ConfigError) as caught:
        auth_for(config, host=HOST, port=5432, cache=cache)

    assert caught.value.fields == ["region"]
    assert "'us-east-2'" in str(caught.value)
    assert "'eu-west-1'" in str(caught.value)


def test_without_a_region_a_host_that_names_none_is_a_config_error(
    cache: CredentialCache,
) -> None:
    with pytest.raises(ConfigError) as caught:
        auth_for(ADMIN, host="127.0.0.1", port=5432, cache=cache)

    assert caught.value.fields == ["region"]
    assert "<id>.dsql.<region>.on.aws" in str(caught.value)


@pytest.mark.parametrize(
    ("host", "region"),
    [
        (HOST, "eu-west-1"),
        ("ABC123.DSQL.US-EAST-1.ON.AWS", "us-east-1"),
        ("abc123.dsql.ap-southeast-2.on.aws.", "ap-southeast-2"),
        ("abc123.dsql-fnh4.us-east-1.on.aws", "us-east-1"),
        ("abc.cluster-x.us-east-1.rds.amazonaws.com", None),
        ("dsql.us-east-1.on.aws.evil.example", None),
        ("127.0.0.1", None),
    ],
)
def test_a_dsql_endpoint_names_its_region(host: str, region: str | None) -> None:
    found = endpoint_name(host)
    assert (found.region if found is not None and found.service == "dsql" else None) == region


@pytest.mark.parametrize(
    ("token_duration", "lifetime", "usable_until"),
    [
        pytest.param(900, 3600.0, 600.0, id="token_reuse decides"),
        pytest.param(300, 3600.0, 240.0, id="the token's own lifetime minus the margin"),
        pytest.param(3600, 400.0, 340.0, id="the signing credentials' expiry minus the margin"),
    ],
)
async def test_a_token_is_reused_no_longer_than_it_and_its_credentials_stay_valid(
    new_cache: Callable[..., CredentialCache],
    source: FakeSource,
    clock: FakeClock,
    token_duration: int,
    lifetime: float,
    usable_until: float,
) -> None:
    cache = new_cache(ttl=3600, refresh_margin=0)  # no refresh ahead: a sharp end of reuse
    source.lifetime = lifetime
    config = AwsIamConfig.from_extra({**BLOCK, "token_duration": token_duration})
    auth = auth_for(config, host=HOST, port=5432, cache=cache)
    token = await auth.credentials()

    _, query = token_query(token.password)
    assert query["X-Amz-Expires"] == str(token_duration)
    assert token.expires_at == dt.datetime.fromtimestamp(
        START + min(token_duration, lifetime), dt.timezone.utc
    )
    clock.advance(usable_until - 0.5)
    assert await auth.credentials() is token
    clock.advance(1.0)
    assert await auth.credentials() is not token
    assert cache.stats()["tokens_signed"] == 2


async def test_a_herd_of_200_first_callers_makes_one_assume_role_and_one_signature(
    cache: CredentialCache, source: FakeSource
) -> None:
    auth = auth_for(APP, host=HOST, port=5432, cache=cache)
    tokens: list[str] = []

    async def first_call() -> None:
        tokens.append((await auth.credentials()).password)

    source.gate.close()
    async with anyio.create_task_group() as group:
        for _ in range(200):
            group.start_soon(first_call)
        await anyio.wait_all_tasks_blocked()
        source.gate.open()

    assert len(set(tokens)) == 1
    assert len(tokens) == 200
    assert (source.calls["AssumeRole"], cache.stats()["tokens_signed"]) == (1, 1)


@pytest.mark.parametrize(
    "other",
    [
        pytest.param({"host": "zyx987.dsql.eu-west-1.on.aws"}, id="another cluster"),
        pytest.param({"config": APP}, id="not admin"),
        pytest.param(
            {"config": AwsIamConfig.from_extra({**BLOCK, "token_duration": 3600})},
            id="another lifetime",
        ),
        pytest.param(
            {
                "config": AwsIamConfig.from_extra(
                    {**BLOCK, "role_arn": "arn:aws:iam::123456789012:role/other"}
                )
            },
            id="another identity",
        ),
    ],
)
async def test_authenticators_differing_in_a_key_field_never_share_a_token(
    cache: CredentialCache, other: dict[str, Any]
) -> None:
    first = await auth_for(ADMIN, host=HOST, port=5432, cache=cache).credentials()
    second = await auth_for(
        other.get("config", ADMIN), host=other.get("host", HOST), port=5432, cache=cache
    ).credentials()

    assert first.password != second.password


async def test_reprs_and_messages_hold_no_token(cache: CredentialCache) -> None:
    auth = auth_for(ADMIN, host=HOST, port=5432, cache=cache)
    credentials = await auth.credentials()

    assert "X-Amz" not in repr(auth)
    assert "X-Amz" not in repr(credentials)


# --- the configuration that selects it --------------------------------------------------------


@pytest.mark.parametrize("selector", ["cluster_identifier", "workgroup_name"])
def test_dsql_cannot_be_combined_with_a_redshift_selector(selector: str) -> None:
    with pytest.raises(ConfigError) as caught:
        AwsIamConfig.from_extra({**BLOCK, selector: "analytics", "db_name": "dev"})

    assert selector in caught.value.fields
    assert "dsql" in str(caught.value)


def test_token_duration_applies_to_dsql_only() -> None:
    with pytest.raises(ConfigError) as caught:
        AwsIamConfig.from_extra(
            {"enabled": True, "region": "us-east-1", "db_username": "app", "token_duration": 600}
        )

    assert caught.value.fields == ["token_duration"]


@pytest.mark.parametrize("duration", [59, 604801, "900", True])
def test_token_duration_is_seconds_from_60_to_a_week(duration: object) -> None:
    with pytest.raises(ConfigError) as caught:
        AwsIamConfig.from_extra({**BLOCK, "token_duration": duration})

    assert caught.value.fields == ["token_duration"]


def test_a_dsql_block_round_trips_through_to_dict() -> None:
    config = AwsIamConfig.from_extra({**BLOCK, "token_duration": 3600})

    assert AwsIamConfig.from_extra(config.to_dict()) == config
    assert config.to_dict()["dsql"] is True


def test_a_dsql_dsn_verifies_the_server_by_default_against_the_system_store(
    cache: CredentialCache,
) -> None:
    target = resolve(f"postgresql://admin@{HOST}/postgres", ADMIN, cache).target

    assert target.sslmode == "verify-full"
    assert target.sslrootcert is None
    explicit = resolve(f"postgresql://{HOST}/postgres?sslmode=require", ADMIN, cache).target
    assert explicit.sslmode == "require"


@pytest.mark.parametrize("scheme", ["mysql", "mysql+asyncmy", "redshift"])
def test_a_dsql_block_needs_a_postgresql_dsn(cache: CredentialCache, scheme: str) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve(f"{scheme}://{HOST}/postgres", ADMIN, cache)

    assert "DSQL" in str(caught.value) or "redshift" in str(caught.value)
