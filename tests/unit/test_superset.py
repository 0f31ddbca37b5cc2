"""iampool.superset: ``iam_config`` (Superset's encrypted_extra and the AWS_DATABASE_IAM_AUTH
flag), ``do_connect`` for synchronous engines, and ``install`` where Superset is absent.

``install`` against the real apache-superset is tested in tests/superset/ (its own environment).
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Iterator
from typing import Any

import pytest

import iampool.superset
from iampool import AwsIamConfig, ConfigError, CredentialCache, IamAuthDisabledError, IamPoolError
from iampool.superset import FEATURE_FLAG, do_connect, iam_config

from .fakes import FakeClock, FakeSource

BLOCK: dict[str, Any] = {
    "enabled": True,
    "role_arn": "arn:aws:iam::222222222222:role/SupersetDatabaseAccess",
    "external_id": "superset-prod-12345",
    "region": "us-east-1",
    "db_username": "superset_iam_user",
    "session_duration": 3600,
}
FLAG_ON = {"AWS_DATABASE_IAM_AUTH": True}


def test_feature_flag_is_named_like_supersets() -> None:
    assert FEATURE_FLAG == "AWS_DATABASE_IAM_AUTH"


@pytest.mark.parametrize(
    "encrypted_extra",
    [None, "", b"", "{}", {}, '{"connect_args": {"sslmode": "require"}}', {"aws_iam": None}],
    ids=["None", "empty string", "empty bytes", "empty JSON", "empty dict", "other keys", "null"],
)
@pytest.mark.parametrize("flags", [{}, FLAG_ON], ids=["flag missing", "flag on"])
def test_no_aws_iam_block_means_no_iam_config(encrypted_extra: Any, flags: dict[str, bool]) -> None:
    assert iam_config(encrypted_extra, flags) is None


@pytest.mark.parametrize(
    "encrypted_extra",
    [
        {"aws_iam": {**BLOCK, "enabled": False}},
        json.dumps({"aws_iam": {**BLOCK, "enabled": False}}),
        {"aws_iam": {"enabled": False}},
    ],
    ids=["dict", "JSON", "nothing but enabled"],
)
@pytest.mark.parametrize("flags", [{}, FLAG_ON], ids=["flag missing", "flag on"])
def test_a_disabled_block_means_no_iam_config(encrypted_extra: Any, flags: dict[str, bool]) -> None:
    assert iam_config(encrypted_extra, flags) is None


@pytest.mark.parametrize(
    "flags",
    [{}, {"AWS_DATABASE_IAM_AUTH": False}, {"AWS_DATABASE_IAM_AUTH": None}, {"OTHER_FLAG": True}],
    ids=["missing", "false", "none", "other flag on"],
)
def test_an_enabled_block_with_the_flag_off_raises_iam_auth_disabled(flags: dict[str, Any]) -> None:
    with pytest.raises(IamAuthDisabledError) as info:
        iam_config({"aws_iam": BLOCK}, flags)

    message = str(info.value)
    assert message.startswith("AWS IAM database authentication is not enabled.")
    assert "AWS_DATABASE_IAM_AUTH" in message
    assert "superset-prod-12345" not in message
    assert isinstance(info.value, IamPoolError)


def test_the_disabled_message_says_how_to_turn_the_flag_on() -> None:
    with pytest.raises(IamAuthDisabledError) as info:
        iam_config({"aws_iam": BLOCK}, {})

    assert 'FEATURE_FLAGS = {"AWS_DATABASE_IAM_AUTH": True}' in str(info.value)


@pytest.mark.parametrize(
    "encrypted_extra",
    [
        json.dumps({"aws_iam": BLOCK}),
        json.dumps({"aws_iam": BLOCK}).encode(),
        {"aws_iam": BLOCK},
    ],
    ids=["JSON string", "JSON bytes", "dict"],
)
def test_an_enabled_block_with_the_flag_on_gives_its_config(encrypted_extra: Any) -> None:
    assert iam_config(encrypted_extra, FLAG_ON) == AwsIamConfig.from_extra(BLOCK)


@pytest.mark.parametrize(
    ("encrypted_extra", "fields"),
    [
        ({"aws_iam": {**BLOCK, "session_duration": 60}}, ["session_duration"]),
        ({"aws_iam": {**BLOCK, "regoin": "us-east-1"}}, ["regoin"]),
        ({"aws_iam": {**BLOCK, "enabled": "true"}}, ["enabled"]),
        ({"aws_iam": {"enabled": True}}, ["db_username"]),  # region: from the host
        ({"aws_iam": "enabled"}, ["aws_iam"]),
        ('{"aws_iam": {"enabled": true,}}', ["encrypted_extra"]),
        ("[]", ["encrypted_extra"]),
        ('{"aws_iam": {"port": ' + "9" * 5000 + "}}", ["encrypted_extra"]),
    ],
    ids=[
        "bad value",
        "typo",
        "enabled as string",
        "missing fields",
        "block not an object",
        "invalid JSON",
        "extra not an object",
        "number beyond the digit limit",
    ],
)
def test_an_invalid_block_with_the_flag_on_raises_config_error(
    encrypted_extra: Any, fields: list[str]
) -> None:
    with pytest.raises(ConfigError) as info:
        iam_config(encrypted_extra, FLAG_ON)

    assert info.value.fields == fields


def test_invalid_json_is_reported_without_echoing_the_document() -> None:
    document = '{"aws_iam": {"external_id": "hunter2-secret",'

    with pytest.raises(ConfigError) as info:
        iam_config(document, FLAG_ON)

    assert "hunter2-secret" not in str(info.value)
    assert "line 1 column" in str(info.value)


RDS = AwsIamConfig.from_extra(BLOCK)
HOST = "app.cluster-abc.us-east-1.rds.amazonaws.com"


@pytest.fixture
def source() -> FakeSource:
    return FakeSource(FakeClock())


@pytest.fixture
def cache(source: FakeSource) -> Iterator[CredentialCache]:
    cache = CredentialCache(clock=source.clock, source=source)
    yield cache
    cache.close()


@pytest.mark.parametrize(
    ("url", "field"),
    [
        (f"postgresql+psycopg2://superset_iam_user:hunter2@{HOST}/app", "dsn"),
        (f"postgresql+psycopg2://someone_else@{HOST}/app", "dsn"),
        (f"postgresql+psycopg2://superset_iam_user@{HOST}/app?sslmode=disable", "sslmode"),
        (f"postgresql+psycopg2://superset_iam_user@{HOST}/app?sslmode=prefer", "sslmode"),
        (f"postgresql+asyncpg://superset_iam_user@{HOST}/app", "url"),
        (f"mysql+mysqldb://superset_iam_user@{HOST}/app", "url"),
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
    url = f"postgresql+psycopg2://superset_iam_user@{HOST}:5432/app?sslmode=verify-full"
    # SQLAlchemy 1.4 spells the database "database", 2.x "dbname"; a stray host is replaced.
    cparams = connect_kwargs(url, RDS, cache, host="elsewhere", database="app")

    assert cparams.keys() == {
        "host", "port", "user", "password", "dbname", "sslmode", "sslrootcert", "gssencmode"
    }  # fmt: skip
    assert (cparams["host"], cparams["port"], cparams["dbname"]) == (HOST, 5432, "app")
    assert (cparams["sslmode"], cparams["gssencmode"]) == ("verify-full", "disable")
    assert cparams["sslrootcert"] == "system"  # verified against the system's trust store
    assert cparams["user"] == "superset_iam_user"
    assert f"{HOST}:5432/?Action=connect&DBUser=superset_iam_user" in cparams["password"]
    assert source.calls["AssumeRole"] == 1


def test_do_connect_gives_pymysql_a_tls_context_and_drops_its_other_spellings(
    cache: CredentialCache,
) -> None:
    url = f"mysql+pymysql://superset_iam_user@{HOST}:3306/app?sslmode=verify-full"
    # SQLAlchemy hands PyMySQL the URL's query as keywords, which PyMySQL does not take.
    cparams = connect_kwargs(url, RDS, cache, db="app", passwd="stale", sslmode="verify-full")

    assert cparams.keys() == {"host", "port", "user", "password", "database", "ssl"}
    assert cparams["ssl"].check_hostname  # verify-full
    assert isinstance(cparams["ssl"], ssl.SSLContext)
    assert cparams["database"] == "app"
    assert cparams["password"].startswith(f"{HOST}:3306/?Action=connect")


def test_do_connect_gives_redshift_connector_the_login_and_endpoint_from_the_api(
    cache: CredentialCache, source: FakeSource
) -> None:
    cluster = AwsIamConfig.from_extra(
        {**BLOCK, "cluster_identifier": "analytics", "db_name": "dev"}
    )  # fmt: skip
    cparams = connect_kwargs("redshift+redshift_connector://", cluster, cache)

    assert (cparams["host"], cparams["port"]) == source.endpoint  # DescribeClusters
    assert cparams["user"] == "IAM:superset_iam_user"  # as GetClusterCredentials names it
    assert cparams["password"] == source.passwords[0]
    assert (cparams["ssl"], cparams["sslmode"], cparams["iam"]) == (True, "verify-ca", False)
    assert dict(source.calls) == {
        "AssumeRole": 1, "GetClusterCredentials": 1, "DescribeClusters": 1
    }  # fmt: skip


def test_do_connect_refuses_a_ca_file_redshift_connector_cannot_take(
    cache: CredentialCache,
) -> None:
    cluster = {**BLOCK, "cluster_identifier": "analytics", "db_name": "dev"}
    url = "redshift+redshift_connector://?sslmode=verify-full&sslrootcert=/etc/ca.pem"

    with pytest.raises(ConfigError) as info:
        do_connect(url, aws_iam=cluster, cache=cache)

    assert info.value.fields == ["sslrootcert"]


def test_install_without_superset_returns_false_and_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "iampool")

    assert iampool.superset.install() is False
    assert "apache-superset is not installed" in caplog.text
    with pytest.raises(IamPoolError, match="apache-superset is not installed"):
        iampool.superset.install(strict=True)
