"""iampool.superset: ``iam_config`` (Superset's encrypted_extra and the AWS_DATABASE_IAM_AUTH
flag), and ``install`` where Superset is absent.

``install`` against the real apache-superset is tested in tests/superset/ (its own environment);
``do_connect`` in test_sync_logins.py.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

import iampool.superset
from iampool import AwsIamConfig, ConfigError, IamAuthDisabledError, IamPoolError
from iampool.superset import FEATURE_FLAG, iam_config

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


def test_install_without_superset_returns_false_and_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "iampool")

    assert iampool.superset.install() is False
    assert "apache-superset is not installed" in caplog.text
    with pytest.raises(IamPoolError, match="apache-superset is not installed"):
        iampool.superset.install(strict=True)
