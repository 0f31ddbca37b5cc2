"""Secrets Manager logins, pure logic: the ``secret_id`` block, the backend's cache semantics on
a fake source and a fake clock, the dialer's rotation retries, the log filter's secret fields."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import pytest

from iampool import (
    AuthTokenRejected,
    AwsIamConfig,
    ConfigError,
    CredentialCache,
    CredentialError,
    DbAuth,
    DbCredentials,
)
from iampool._cache import mint_context
from iampool._credentials import RotatingAuth
from iampool._redact import REDACTED, redact
from iampool.auth import SecretsManagerAuth, auth_for
from iampool.pools._dialer import Backoff, Dialer, Refusal
from iampool.pools._plan import resolve
from iampool.pools._tls import Tls

from .fakes import FakeClock, FakeSource, settle, wait_until

pytestmark = pytest.mark.anyio

ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/app-AbCdEf"
HOST = "app.cluster-abc.eu-west-1.rds.amazonaws.com"
PASSWORD = "Secret-Password-0001-xyzzy"
BLOCK = {"enabled": True, "secret_id": ARN}
CONFIG = AwsIamConfig.from_extra(BLOCK)


def secret(**fields: Any) -> str:
    return json.dumps({"username": "app", "password": PASSWORD, **fields})


@pytest.fixture
def new_auth(cache: CredentialCache, source: FakeSource) -> Callable[..., SecretsManagerAuth]:
    source.secret_text = secret(host=HOST, port=5432, engine="postgres", dbname="orders")

    def new(config: AwsIamConfig = CONFIG, **endpoint: Any) -> SecretsManagerAuth:
        endpoint.setdefault("host", HOST)
        endpoint.setdefault("port", 5432)
        return SecretsManagerAuth(config, context=mint_context(cache), **endpoint)

    return new


# -- configuration -----------------------------------------------------------------------------


def test_secret_id_selects_the_backend_and_its_arn_the_region() -> None:
    assert CONFIG.backend == "secrets-manager"
    assert CONFIG.region == "eu-west-1"
    assert (CONFIG.secret_ttl, CONFIG.rotation_window) == (900, 60)
    named = AwsIamConfig.from_extra({"enabled": True, "region": "us-east-1", "secret_id": "db/app"})
    assert (named.secret_id, named.region) == ("db/app", "us-east-1")
    assert AwsIamConfig.from_extra(CONFIG.to_dict()) == CONFIG


@pytest.mark.parametrize(
    ("block", "field", "words"),
    [
        ({**BLOCK, "db_username": "app"}, "db_username", "comes from the secret"),
        ({**BLOCK, "region": "us-east-1"}, "region", "'eu-west-1'"),
        ({**BLOCK, "secret_ttl": 0}, "secret_ttl", "from 1 to 86400"),
        ({**BLOCK, "rotation_window": 901}, "rotation_window", "from 0 to 900"),
        ({**BLOCK, "secret_id": "arn:aws:iam::123456789012:role/x"}, "secret_id", "ARN"),
        ({**BLOCK, "secret_id": "has space"}, "secret_id", "name"),
        ({**BLOCK, "secret_id": 7}, "secret_id", "string"),
        ({**BLOCK, "cluster_identifier": "c"}, "cluster_identifier", "redshift://"),
        ({**BLOCK, "dsql": True}, "dsql", "IAM tokens only"),
        (
            {"enabled": True, "region": "us-east-1", "db_username": "a", "secret_ttl": 60},
            "secret_ttl",
            "secret_id",
        ),
    ],
)
def test_a_bad_secret_block_is_a_config_error_naming_the_field(
    block: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        AwsIamConfig.from_extra(block)
    assert field in raised.value.fields
    assert words in str(raised.value)


def test_a_dsn_naming_a_user_is_refused_before_any_aws_call(
    source: FakeSource, cache: CredentialCache
) -> None:
    with pytest.raises(ConfigError) as raised:
        resolve(f"postgresql://app@{HOST}/orders", BLOCK, cache)
    assert "the secret's 'username'" in str(raised.value)
    assert source.calls == {}


def test_a_secret_name_without_any_region_is_a_config_error_before_any_aws_call(
    source: FakeSource, cache: CredentialCache
) -> None:
    block = {"enabled": True, "secret_id": "db/app"}
    with pytest.raises(ConfigError) as raised:
        auth_for(block, host="127.0.0.1", port=5432, cache=cache)
    assert raised.value.fields == ["region"]
    assert source.calls == {}


@pytest.mark.parametrize(
    "dsn",
    [
        f"postgresql://{HOST}/orders",
        f"postgresql+psycopg://{HOST}/orders",
        f"mysql://{HOST}/orders",
        f"mysql+asyncmy://{HOST}/orders",
        "redshift://analytics.abc123.eu-west-1.redshift.amazonaws.com:5439/dev",
    ],
)
def test_every_driver_plans_a_rotating_secrets_login(dsn: str, cache: CredentialCache) -> None:
    pytest.importorskip(
        {"postgresql": "asyncpg", "mysql": "aiomysql", "redshift": "redshift_connector"}[
            dsn.split(":", 1)[0].split("+", 1)[0]
        ]
    )
    plan = resolve(dsn, BLOCK, cache)
    assert isinstance(plan.auth, SecretsManagerAuth)
    assert isinstance(plan.dialer.auth, RotatingAuth)
    assert plan.dialer.auth.rotation_window == 60
    assert "rotation_window" in plan.dialer.advice


# -- the backend: cache semantics ----------------------------------------------------------------


async def test_credentials_are_the_secrets_login_for_the_dsns_endpoint(
    new_auth: Callable[..., SecretsManagerAuth], source: FakeSource, clock: FakeClock
) -> None:
    auth = new_auth()
    credentials = await auth.credentials()
    assert isinstance(auth, DbAuth)
    assert isinstance(auth, RotatingAuth)
    assert (credentials.user, credentials.password) == ("app", PASSWORD)
    assert (credentials.host, credentials.port, credentials.database) == (HOST, 5432, "orders")
    assert credentials.expires_at == datetime.fromtimestamp(clock() + 900, timezone.utc)
    assert [request for _, request in source.logins] == [{"region": "eu-west-1", "secret_id": ARN}]
    assert (source.calls["DefaultChain"], source.calls["GetSecretValue"]) == (1, 1)
    assert PASSWORD not in repr(auth)
    assert PASSWORD not in repr(credentials)


async def test_herd_of_1000_lookups_makes_one_get_secret_value(
    new_auth: Callable[..., SecretsManagerAuth], source: FakeSource
) -> None:
    auth = new_auth()
    passwords: list[str] = []

    async def lookup() -> None:
        passwords.append((await auth.credentials()).password)

    source.api_gate.close()
    async with anyio.create_task_group() as group:
        for _ in range(1000):
            group.start_soon(lookup)
        await anyio.wait_all_tasks_blocked()
        source.api_gate.open()
    assert passwords == [PASSWORD] * 1000
    assert source.calls["GetSecretValue"] == 1


async def test_the_secret_is_refreshed_ahead_of_secret_ttl_in_the_background(
    new_auth: Callable[..., SecretsManagerAuth],
    source: FakeSource,
    clock: FakeClock,
    cache: CredentialCache,
) -> None:
    auth = new_auth(AwsIamConfig.from_extra({**BLOCK, "secret_ttl": 600}))
    await auth.credentials()
    source.secret_text = secret(password="Secret-Password-0002-xyzzy")
    clock.advance(590)  # inside the refresh margin, before the ttl
    assert (await auth.credentials()).password == PASSWORD  # served at once
    await wait_until(lambda: source.calls["GetSecretValue"] == 2)
    await settle(cache)
    assert (await auth.credentials()).password == "Secret-Password-0002-xyzzy"


async def test_a_failing_refresh_serves_the_stale_secret(
    new_auth: Callable[..., SecretsManagerAuth], source: FakeSource, clock: FakeClock
) -> None:
    auth = new_auth()
    await auth.credentials()
    clock.advance(3600)  # past the ttl
    source.api_failures.append(CredentialError("Failed to get secret: Throttling.", code="T"))
    assert (await auth.credentials()).password == PASSWORD
    assert source.calls["GetSecretValue"] == 2


async def test_a_refused_value_is_dropped_once_per_herd_and_at_most_once_a_second(
    new_auth: Callable[..., SecretsManagerAuth], source: FakeSource, clock: FakeClock
) -> None:
    auth = new_auth()
    refused = await auth.credentials()
    clock.advance(5)
    # A herd refused with the same value: the first drops it, the others find it gone.
    assert [auth.refused(refused) for _ in range(100)] == [True] + [False] * 99
    again = await auth.credentials()
    assert source.calls["GetSecretValue"] == 2
    assert (again.user, again.password) == (refused.user, refused.password)  # not rotated yet
    # Just read from AWS: refused again within the second, it is kept (no re-read storm).
    assert auth.refused(again) is False
    clock.advance(1.5)
    assert auth.refused(again) is True
    # Another value than the cached one is never dropped by a late refusal.
    source.secret_text = secret(password="Secret-Password-0003-xyzzy")
    newer = await auth.credentials()
    clock.advance(5)
    assert auth.refused(refused) is False
    assert await auth.credentials() is newer


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("not json at all Secret-Password-0004", "is not a JSON object"),
        (json.dumps(["app", "Secret-Password-0004"]), "is not a JSON object"),
        (json.dumps({"username": "app"}), "no 'password'"),
        (json.dumps({"password": "Secret-Password-0004"}), "no 'username'"),
    ],
)
async def test_a_secret_that_is_not_rds_json_is_a_credential_error_without_its_text(
    new_auth: Callable[..., SecretsManagerAuth], source: FakeSource, text: str, words: str
) -> None:
    auth = new_auth()
    source.secret_text = text
    with pytest.raises(CredentialError) as raised:
        await auth.credentials()
    assert words in str(raised.value)
    assert raised.value.code == "InvalidSecret"
    assert "Secret-Password-0004" not in str(raised.value)
    assert raised.value.__cause__ is None
    assert raised.value.__context__ is None


@pytest.mark.parametrize(
    ("fields", "named", "engine"),
    [
        ({"host": "other.example.com"}, ["host"], "postgresql"),
        ({"port": "3306"}, ["port"], "postgresql"),
        ({"host": "OTHER.example.com", "port": 6432}, ["host", "port"], "postgresql"),
        ({"engine": "mysql"}, ["engine"], "postgresql"),
        ({"engine": "postgres"}, ["engine"], "mysql"),
    ],
)
async def test_a_secret_disagreeing_with_the_dsn_is_a_config_error_naming_both(
    new_auth: Callable[..., SecretsManagerAuth],
    source: FakeSource,
    fields: dict[str, Any],
    named: list[str],
    engine: str,
) -> None:
    auth = new_auth(engine=engine)
    source.secret_text = secret(**fields)
    with pytest.raises(ConfigError) as raised:
        await auth.credentials()
    assert raised.value.fields == named
    message = str(raised.value)
    if "host" in named:
        assert HOST in message
        assert "other.example.com" in message.lower()
    if "port" in named:
        assert "5432" in message
    assert PASSWORD not in message


async def test_the_secrets_endpoint_is_used_when_the_dsn_names_none(
    new_auth: Callable[..., SecretsManagerAuth], source: FakeSource
) -> None:
    auth = new_auth(host=None, port=None)
    source.secret_text = secret(host="redshift.example.com", port=5439, dbname="dev")
    credentials = await auth.credentials()
    assert (credentials.host, credentials.port, credentials.database) == (
        "redshift.example.com",
        5439,
        "dev",
    )


def test_the_authenticator_cannot_be_pickled(
    new_auth: Callable[..., SecretsManagerAuth],
) -> None:
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(new_auth())


# -- the dialer: rotation ------------------------------------------------------------------------


class Refused(Exception):
    """A driver's error for a refused password."""


class RotatingSecret:
    """A RotatingAuth whose secret changes after ``stale_reads`` reads following a refusal."""

    def __init__(self, window: float, stale_reads: int) -> None:
        self.rotation_window = window
        self.stale_reads = stale_reads
        self.version = 1
        self.reads = 0
        self.refusals = 0

    @property
    def config(self) -> AwsIamConfig:
        return CONFIG

    async def credentials(self) -> DbCredentials:
        self.reads += 1
        return DbCredentials("app", f"password-{self.version}", HOST, 5432, None,
                             datetime.now(timezone.utc) + timedelta(minutes=15))  # fmt: skip

    def credentials_sync(self, timeout: float | None = None) -> DbCredentials:
        raise NotImplementedError

    def invalidate(self) -> None:
        raise AssertionError("a rotating password is dropped with refused(), not invalidate()")

    def refused(self, credentials: DbCredentials) -> bool:
        self.refusals += 1
        if self.refusals > self.stale_reads:
            self.version = 2  # the rotation finished: the secret has the new password
        return True


def rotation_dialer(auth: RotatingSecret) -> Dialer:
    return Dialer(
        auth=auth,
        classify=lambda exc: Refusal("rejected", str(exc)) if isinstance(exc, Refused) else None,
        timeout=30.0,
        rate=None,
        tls=Tls("verify-full", "test CA"),
        endpoint=f"{HOST}:5432",
        user="from secret",
        rotation_backoff=Backoff(base=0.001, cap=0.002),
    )


async def database(credentials: DbCredentials) -> str:
    """The database: its password is already the new one."""
    if credentials.password != "password-2":
        raise Refused('password authentication failed for user "app"')
    return "connection"


async def test_a_login_refused_during_a_rotation_waits_for_the_secret_and_succeeds() -> None:
    auth = RotatingSecret(window=60.0, stale_reads=5)
    assert await rotation_dialer(auth).dial(database) == "connection"
    assert auth.refusals == 6  # the secret followed after five stale reads
    assert auth.reads == 7


async def test_a_password_refused_past_rotation_window_is_auth_token_rejected() -> None:
    auth = RotatingSecret(window=0.05, stale_reads=10**9)
    with pytest.raises(AuthTokenRejected) as raised:
        await rotation_dialer(auth).dial(database)
    message = str(raised.value)
    assert "rotation_window" in message
    assert ARN in message
    assert "password-1" not in message
    assert auth.refusals >= 2  # read again once at least


async def test_a_rotation_window_of_zero_keeps_the_one_retry_of_tokens() -> None:
    auth = RotatingSecret(window=0.0, stale_reads=10**9)
    invalidations: list[None] = []
    auth.invalidate = lambda: invalidations.append(None)  # type: ignore[method-assign]
    with pytest.raises(AuthTokenRejected) as raised:
        await rotation_dialer(auth).dial(database)
    assert (auth.reads, auth.refusals, len(invalidations)) == (2, 0, 2)
    assert f"the password of secret {ARN}" in str(raised.value)


# -- the log filter --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        # botocore's DEBUG "Response body": the secret's JSON inside the response's JSON, in a
        # bytes repr (backslashes doubled).
        'Response body:\nb\'{"ARN":"arn","Name":"db","SecretString":"{\\\\"username\\\\":'
        '\\\\"app\\\\",\\\\"password\\\\":\\\\"p\\\\\\\\\\\\"w\\\\"}","VersionId":"v"}\'',
        '{"SecretBinary": "eyJwYXNzd29yZCI6ICJwdyJ9", "VersionId": "v"}',
        "{'SecretString': '{\"username\": \"app\", \"password\": \"pw\"}', 'Name': 'db'}",
    ],
)
def test_secret_string_and_secret_binary_are_redacted_whatever_the_quoting(record: str) -> None:
    cleaned = redact(record)
    assert REDACTED in cleaned
    for leaked in ("username", "eyJwYXNzd29yZCI6ICJwdyJ9", "VersionId", "app\\"):
        assert leaked not in cleaned.split("Secret", 1)[1]
