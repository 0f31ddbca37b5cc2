"""AwsIamConfig.from_extra: the Superset-compatible ``aws_iam`` block, parsed and validated."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iampool import AwsIamConfig, ConfigError, ConfigProblem, IamPoolError

# The three examples of Superset's "AWS IAM Authentication" page, as users paste them.
SUPERSET_AURORA = """{
  "aws_iam": {
    "enabled": true,
    "role_arn": "arn:aws:iam::222222222222:role/SupersetDatabaseAccess",
    "external_id": "superset-prod-12345",
    "region": "us-east-1",
    "db_username": "superset_iam_user",
    "session_duration": 3600
  }
}"""
SUPERSET_SERVERLESS = """{
  "aws_iam": {
    "enabled": true,
    "role_arn": "arn:aws:iam::222222222222:role/SupersetRedshiftAccess",
    "region": "us-east-1",
    "workgroup_name": "my-workgroup",
    "db_name": "dev"
  }
}"""
SUPERSET_PROVISIONED = """{
  "aws_iam": {
    "enabled": true,
    "role_arn": "arn:aws:iam::222222222222:role/SupersetRedshiftAccess",
    "region": "us-east-1",
    "cluster_identifier": "my-cluster",
    "db_username": "superset_iam_user",
    "db_name": "dev"
  }
}"""

AURORA: dict[str, Any] = {"enabled": True, "region": "us-east-1", "db_username": "app"}
PROVISIONED: dict[str, Any] = {
    "enabled": True,
    "region": "us-east-1",
    "cluster_identifier": "analytics",
    "db_username": "etl",
    "db_name": "dev",
}
SERVERLESS: dict[str, Any] = {
    "enabled": True,
    "region": "us-east-1",
    "workgroup_name": "analytics-wg",
    "db_name": "dev",
}

FIELD_NAMES = sorted(field.name for field in dataclasses.fields(AwsIamConfig))


def with_fields(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A copy of ``base`` with ``changes`` applied; a change to ``...`` removes the key."""
    block = {**base, **changes}
    return {key: value for key, value in block.items() if value is not ...}


def config_error(extra: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        AwsIamConfig.from_extra(extra)
    return info.value


def problem_of(extra: Any, field: str) -> str:
    """The message of the one problem reported for ``field``, checking it appears in str(err)."""
    err = config_error(extra)
    messages = [problem.message for problem in err.errors if problem.field == field]
    assert len(messages) == 1, f"expected one problem for {field!r}, got {err.errors}"
    assert f"  - {field}: {messages[0]}" in str(err)
    return messages[0]


# --- the Superset documentation examples ------------------------------------------------------


def test_superset_aurora_example_parses_with_every_field() -> None:
    cfg = AwsIamConfig.from_extra(SUPERSET_AURORA)

    assert cfg == AwsIamConfig(
        enabled=True,
        region="us-east-1",
        role_arn="arn:aws:iam::222222222222:role/SupersetDatabaseAccess",
        external_id="superset-prod-12345",
        session_duration=3600,
        db_username="superset_iam_user",
    )
    assert cfg.backend == "rds"


def test_superset_redshift_serverless_example_parses() -> None:
    cfg = AwsIamConfig.from_extra(SUPERSET_SERVERLESS)

    assert cfg.backend == "redshift-serverless"
    assert cfg.workgroup_name == "my-workgroup"
    assert cfg.db_name == "dev"
    assert cfg.db_username is None
    assert cfg.role_arn == "arn:aws:iam::222222222222:role/SupersetRedshiftAccess"


def test_superset_redshift_provisioned_example_parses() -> None:
    cfg = AwsIamConfig.from_extra(SUPERSET_PROVISIONED)

    assert cfg.backend == "redshift"
    assert cfg.cluster_identifier == "my-cluster"
    assert cfg.db_username == "superset_iam_user"
    assert cfg.db_name == "dev"


# --- accepted input shapes -------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param(json.dumps({"aws_iam": AURORA}), id="encrypted_extra JSON string"),
        pytest.param(json.dumps({"aws_iam": AURORA}).encode(), id="encrypted_extra JSON bytes"),
        pytest.param(json.dumps(AURORA), id="the block as JSON"),
        pytest.param({"aws_iam": AURORA}, id="dict holding aws_iam"),
        pytest.param(AURORA, id="the block itself"),
    ],
)
def test_from_extra_accepts_json_text_bytes_a_dict_holding_the_block_and_the_block(
    extra: Any,
) -> None:
    assert AwsIamConfig.from_extra(extra) == AwsIamConfig(
        enabled=True, region="us-east-1", db_username="app"
    )


def test_other_keys_beside_aws_iam_in_encrypted_extra_are_ignored() -> None:
    extra = {"aws_iam": AURORA, "connect_args": {"sslmode": "verify-full"}}

    assert AwsIamConfig.from_extra(extra).db_username == "app"


def test_utf16_json_bytes_are_decoded() -> None:
    assert AwsIamConfig.from_extra(json.dumps(AURORA).encode("utf-16")).region == "us-east-1"


# --- defaults and derived values -------------------------------------------------------------


def test_defaults_for_optional_fields() -> None:
    cfg = AwsIamConfig.from_extra(AURORA)

    assert cfg.role_arn is None
    assert cfg.external_id is None
    assert cfg.session_duration == 3600
    assert cfg.password_duration == 900
    assert cfg.db_name is None
    assert cfg.db_groups == ()
    assert cfg.auto_create is False
    assert cfg.role_session_name is None
    assert cfg.port is None


@pytest.mark.parametrize(
    ("block", "backend"),
    [
        (AURORA, "rds"),
        (with_fields(AURORA, db_name="app"), "rds"),
        (PROVISIONED, "redshift"),
        (SERVERLESS, "redshift-serverless"),
        (with_fields(SERVERLESS, db_username="analyst"), "redshift-serverless"),
    ],
    ids=["aurora", "aurora with db_name", "provisioned", "serverless", "serverless with user"],
)
def test_backend_is_derived_from_the_redshift_selectors(
    block: dict[str, Any], backend: str
) -> None:
    assert AwsIamConfig.from_extra(block).backend == backend


def test_enabled_false_is_a_valid_block() -> None:
    assert AwsIamConfig.from_extra(with_fields(AURORA, enabled=False)).enabled is False


def test_null_optional_fields_count_as_absent() -> None:
    block = with_fields(AURORA, role_arn=None, external_id=None, session_duration=None)

    assert AwsIamConfig.from_extra(block) == AwsIamConfig.from_extra(AURORA)


# --- value object behaviour ------------------------------------------------------------------


def test_config_is_frozen() -> None:
    cfg = AwsIamConfig.from_extra(AURORA)

    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.region = "eu-west-1"  # type: ignore[misc]


def test_equal_configs_hash_equal_and_share_a_dict_key() -> None:
    first = AwsIamConfig.from_extra(with_fields(PROVISIONED, db_groups=["readers", "etl"]))
    second = AwsIamConfig.from_extra(
        json.dumps(with_fields(PROVISIONED, db_groups=["readers", "etl"]))
    )

    assert first == second
    assert hash(first) == hash(second)
    assert {first: "pool"}[second] == "pool"


def test_configs_differing_in_any_field_are_unequal() -> None:
    base = AwsIamConfig.from_extra(AURORA)

    assert base != AwsIamConfig.from_extra(with_fields(AURORA, region="us-west-2"))
    assert base != AwsIamConfig.from_extra(with_fields(AURORA, external_id="other-id"))


def test_repr_hides_the_external_id() -> None:
    cfg = AwsIamConfig.from_extra(SUPERSET_AURORA)

    assert "superset-prod-12345" not in repr(cfg)
    assert "SupersetDatabaseAccess" in repr(cfg)


@pytest.mark.parametrize(
    "extra",
    [
        SUPERSET_AURORA,
        SUPERSET_SERVERLESS,
        SUPERSET_PROVISIONED,
        AURORA,
        with_fields(AURORA, enabled=False, session_duration=900, port=5432),
        with_fields(
            PROVISIONED,
            db_groups=["readers"],
            auto_create=True,
            role_session_name="etl-job",
            password_duration=3600,
        ),
    ],
    ids=["aurora", "serverless", "provisioned", "minimal", "disabled", "redshift extras"],
)
def test_to_dict_round_trips_through_from_extra_and_json(extra: Any) -> None:
    cfg = AwsIamConfig.from_extra(extra)

    assert AwsIamConfig.from_extra(cfg.to_dict()) == cfg
    assert AwsIamConfig.from_extra(json.dumps({"aws_iam": cfg.to_dict()})) == cfg


def test_to_dict_leaves_out_defaults() -> None:
    assert AwsIamConfig.from_extra(AURORA).to_dict() == AURORA


# --- required fields per backend -------------------------------------------------------------


@pytest.mark.parametrize("base", [AURORA, PROVISIONED, SERVERLESS], ids=["aurora", "prov", "sls"])
@pytest.mark.parametrize("region", [..., ""], ids=["missing", "empty"])
def test_a_block_may_leave_region_to_the_endpoints_host_name(
    base: dict[str, Any], region: object
) -> None:
    # Checked where credentials are made for an endpoint: tests/unit/test_endpoints.py.
    assert AwsIamConfig.from_extra(with_fields(base, region=region)).region == ""


@pytest.mark.parametrize("base", [AURORA, PROVISIONED, SERVERLESS], ids=["aurora", "prov", "sls"])
def test_enabled_is_required_for_every_backend(base: dict[str, Any]) -> None:
    assert problem_of(with_fields(base, enabled=...), "enabled") == "is required (true or false)"


def test_aurora_requires_db_username() -> None:
    assert problem_of(with_fields(AURORA, db_username=...), "db_username").startswith("is required")


def test_redshift_provisioned_requires_db_username() -> None:
    message = problem_of(with_fields(PROVISIONED, db_username=...), "db_username")

    assert message.startswith("is required")


def test_redshift_serverless_does_not_require_db_username() -> None:
    assert "db_username" not in SERVERLESS
    assert AwsIamConfig.from_extra(SERVERLESS).db_username is None


@pytest.mark.parametrize("base", [PROVISIONED, SERVERLESS], ids=["provisioned", "serverless"])
def test_redshift_requires_db_name(base: dict[str, Any]) -> None:
    assert problem_of(with_fields(base, db_name=...), "db_name").startswith("is required")


def test_aurora_does_not_require_db_name() -> None:
    assert AwsIamConfig.from_extra(AURORA).db_name is None


def test_missing_db_name_is_reported_even_when_the_cluster_identifier_is_invalid() -> None:
    err = config_error(with_fields(PROVISIONED, cluster_identifier="9-bad", db_name=...))

    assert err.fields == ["cluster_identifier", "db_name"]


def test_an_empty_block_reports_enabled_and_db_username() -> None:
    assert config_error({}).fields == ["enabled", "db_username"]


# --- enabled ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("true", "a string"),
        ("false", "a string"),
        (1, "a number"),
        (0, "a number"),
        ([], "an array"),
    ],
)
def test_enabled_must_be_a_json_boolean(value: Any, kind: str) -> None:
    message = problem_of(with_fields(AURORA, enabled=value), "enabled")

    assert message == f"must be a JSON boolean (true or false), got {kind}"


# --- region ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "region",
    ["us-east-1", "eu-central-1", "ap-southeast-2", "us-gov-west-1", "cn-north-1", "il-central-1"],
)
def test_region_accepts_aws_region_names(region: str) -> None:
    assert AwsIamConfig.from_extra(with_fields(AURORA, region=region)).region == region


@pytest.mark.parametrize(
    "region",
    ["US-EAST-1", "us-east", "useast1", "us-east-1 ", "us_east_1", "us-east-\u0661"],
    ids=[
        "uppercase",
        "no number",
        "no dashes",
        "trailing space",
        "underscores",
        "unicode",
    ],
)
def test_region_rejects_anything_but_a_region_name(region: str) -> None:
    message = problem_of(with_fields(AURORA, region=region), "region")

    assert message.startswith("must be an AWS region name such as 'us-east-1'")


def test_region_must_be_a_string() -> None:
    assert problem_of(with_fields(AURORA, region=1), "region") == "must be a string, got a number"


# --- role_arn --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arn",
    [
        "arn:aws:iam::123456789012:role/SupersetDatabaseAccess",
        "arn:aws-cn:iam::123456789012:role/reader",
        "arn:aws-us-gov:iam::123456789012:role/reader",
        "arn:aws:iam::123456789012:role/service-role/reader",
        "arn:aws:iam::123456789012:role/team/data/reader+etl=1,x.y@z",
    ],
    ids=["aws", "aws-cn", "aws-us-gov", "path", "deep path and symbols"],
)
def test_role_arn_accepts_iam_role_arns_in_every_partition_and_with_paths(arn: str) -> None:
    assert AwsIamConfig.from_extra(with_fields(AURORA, role_arn=arn)).role_arn == arn


@pytest.mark.parametrize(
    "arn",
    [
        "arn:aws:iam::12345678901:role/reader",
        "arn:aws:iam::1234567890123:role/reader",
        "arn:aws:iam::12345678901x:role/reader",
        "arn:aws:iam::\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669\u0660\u0661\u0662:role/x",
        "arn:aws:iam::123456789012:user/reader",
        "arn:aws:sts::123456789012:assumed-role/reader/session",
        "arn:aws:iam::123456789012:role/",
        "arn:awsx:iam::123456789012:role/reader",
        "arn:azure:iam::123456789012:role/reader",
        "SupersetDatabaseAccess",
        "",
    ],
    ids=[
        "11 digits",
        "13 digits",
        "letter in account",
        "non-ascii digits",
        "user",
        "assumed role",
        "no name",
        "awsx partition",
        "not aws",
        "bare name",
        "empty",
    ],
)
def test_role_arn_rejects_anything_but_an_iam_role_arn(arn: str) -> None:
    message = problem_of(with_fields(AURORA, role_arn=arn), "role_arn")

    assert message.startswith(
        "must be an IAM role ARN: arn:<partition>:iam::<12-digit account>:role/<name>"
    )


# --- external_id -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "external_id",
    ["ab", "superset-prod-12345", "x" * 1224, "a_b+c=d,e.f@g:h/i-j"],
    ids=["2 chars", "superset example", "1224 chars", "every allowed symbol"],
)
def test_external_id_accepts_sts_values(external_id: str) -> None:
    cfg = AwsIamConfig.from_extra(with_fields(AURORA, external_id=external_id))

    assert cfg.external_id == external_id


@pytest.mark.parametrize(
    "external_id",
    ["Z", "Z" * 1225, "hunter2 secret", "hunter2;secret", "hunt\u00e9r2-secret", "hunter2\nsecret"],
    ids=["1 char", "1225 chars", "space", "semicolon", "non-ascii letter", "newline"],
)
def test_external_id_outside_sts_rules_is_rejected_without_echoing_it(external_id: str) -> None:
    err = config_error(with_fields(AURORA, external_id=external_id))

    assert err.fields == ["external_id"]
    assert err.errors[0].message == "must be 2 to 1224 characters of letters, digits and +=,.@:/-"
    assert "Z" not in str(err)
    assert "hunt" not in str(err)


def test_external_id_must_be_a_string() -> None:
    message = problem_of(with_fields(AURORA, external_id=12345), "external_id")

    assert message == "must be a string, got a number"


# --- session_duration and password_duration --------------------------------------------------


@pytest.mark.parametrize("seconds", [900, 3600, 43200])
def test_session_duration_accepts_sts_range(seconds: int) -> None:
    cfg = AwsIamConfig.from_extra(with_fields(AURORA, session_duration=seconds))

    assert cfg.session_duration == seconds


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (899, "899"),
        (43201, "43201"),
        (0, "0"),
        (-3600, "-3600"),
        (True, "a boolean"),
        ("3600", "a string"),
        (3600.0, "a number"),
        (3600.5, "a number"),
    ],
)
def test_session_duration_must_be_an_integer_from_900_to_43200(value: Any, shown: str) -> None:
    message = problem_of(with_fields(AURORA, session_duration=value), "session_duration")

    assert message == f"must be an integer of seconds from 900 to 43200, got {shown}"


@pytest.mark.parametrize("seconds", [900, 1800, 3600])
def test_password_duration_accepts_900_to_3600(seconds: int) -> None:
    cfg = AwsIamConfig.from_extra(with_fields(PROVISIONED, password_duration=seconds))

    assert cfg.password_duration == seconds


@pytest.mark.parametrize(
    ("value", "shown"),
    [(899, "899"), (3601, "3601"), (False, "a boolean"), ("900", "a string"), (900.0, "a number")],
)
def test_password_duration_must_be_an_integer_from_900_to_3600(value: Any, shown: str) -> None:
    message = problem_of(with_fields(PROVISIONED, password_duration=value), "password_duration")

    assert message == f"must be an integer of seconds from 900 to 3600, got {shown}"


# --- Redshift selectors and names ------------------------------------------------------------


def test_workgroup_name_and_cluster_identifier_together_are_an_error_in_supersets_words() -> None:
    err = config_error(with_fields(SERVERLESS, cluster_identifier="analytics"))

    assert err.fields == ["cluster_identifier"]
    assert err.errors[0].message == (
        "AWS IAM configuration cannot have both workgroup_name (Serverless) and "
        "cluster_identifier (provisioned). Please specify only one."
    )


SUPERSET_NO_SELECTOR = (
    "AWS IAM configuration must include either workgroup_name (for Redshift Serverless) or "
    "cluster_identifier (for provisioned Redshift clusters)."
)


@pytest.mark.parametrize(
    "aws_iam",
    [
        {"enabled": True, "region": "us-east-1", "db_name": "dev"},
        {"enabled": True, "region": "us-east-1", "db_username": "etl", "db_name": "dev"},
        json.dumps({"aws_iam": {"enabled": True, "region": "us-east-1"}}),
        AwsIamConfig.from_extra(AURORA),
    ],
    ids=["no-db_username", "with-db_username", "encrypted_extra-json", "validated-rds-config"],
)
@pytest.mark.parametrize("scheme", ["redshift", "redshift+redshift_connector"])
def test_a_redshift_dsn_without_a_selector_names_the_selector_in_supersets_words(
    aws_iam: Any, scheme: str
) -> None:
    from iampool.pools import resolve

    with pytest.raises(ConfigError) as caught:
        resolve(
            f"{scheme}://examplecluster.abc123.us-east-1.redshift.amazonaws.com/dev", aws_iam, None
        )

    assert [str(problem) for problem in caught.value.errors] == [f"aws_iam: {SUPERSET_NO_SELECTOR}"]
    assert "db_username" not in str(caught.value)


def test_a_redshift_dsn_without_a_selector_still_reports_the_blocks_other_problems() -> None:
    from iampool.pools import resolve

    with pytest.raises(ConfigError) as caught:
        resolve("redshift://", {"enabled": True, "regoin": "us-east-1"}, None)

    assert caught.value.fields == ["aws_iam", "regoin"]
    assert caught.value.errors[0].message == SUPERSET_NO_SELECTOR


def test_an_aurora_dsn_without_db_username_still_asks_for_db_username() -> None:
    from iampool.pools import resolve

    with pytest.raises(ConfigError) as caught:
        resolve("postgresql://db.example/app", {"enabled": True, "region": "us-east-1"}, None)

    assert caught.value.fields == ["db_username"]


@pytest.mark.parametrize("name", ["wg1", "my-workgroup", "a" * 64])
def test_workgroup_name_accepts_serverless_names(name: str) -> None:
    cfg = AwsIamConfig.from_extra(with_fields(SERVERLESS, workgroup_name=name))

    assert (cfg.workgroup_name, cfg.backend) == (name, "redshift-serverless")


@pytest.mark.parametrize("name", ["wg", "a" * 65, "My-Workgroup", "my_workgroup"])
def test_workgroup_name_rejects_other_names(name: str) -> None:
    message = problem_of(with_fields(SERVERLESS, workgroup_name=name), "workgroup_name")

    assert message.startswith("must be 3 to 64 lowercase letters, digits or hyphens")


@pytest.mark.parametrize("name", ["my-cluster", "a", "A" + "b" * 62])
def test_cluster_identifier_accepts_cluster_names(name: str) -> None:
    cfg = AwsIamConfig.from_extra(with_fields(PROVISIONED, cluster_identifier=name))

    assert cfg.cluster_identifier == name


@pytest.mark.parametrize("name", ["9cluster", "my--cluster", "cluster-", "a" * 64, "my_cluster"])
def test_cluster_identifier_rejects_other_names(name: str) -> None:
    message = problem_of(with_fields(PROVISIONED, cluster_identifier=name), "cluster_identifier")

    assert message.startswith("must be 1 to 63 letters, digits or single hyphens")


@pytest.mark.parametrize("user", ["a", "etl_user", "Analyst.1@corp", "u" * 64])
def test_redshift_provisioned_db_username_accepts_redshift_users(user: str) -> None:
    assert AwsIamConfig.from_extra(with_fields(PROVISIONED, db_username=user)).db_username == user


@pytest.mark.parametrize(
    "user",
    ["u" * 65, "1user", "_user", "etl:user", "etl/user", ""],
    ids=["65 chars", "digit first", "underscore first", "colon", "slash", "empty"],
)
def test_redshift_provisioned_db_username_must_follow_redshift_rules(user: str) -> None:
    message = problem_of(with_fields(PROVISIONED, db_username=user), "db_username")

    assert message.startswith(
        "must be a Redshift user: 1 to 64 characters, starting with a letter, no ':' or '/'"
    )


@pytest.mark.parametrize("user", ["PUBLIC", "public", "Public"])
def test_redshift_provisioned_db_username_must_not_be_public(user: str) -> None:
    message = problem_of(with_fields(PROVISIONED, db_username=user), "db_username")

    assert message == "must not be PUBLIC (a reserved Redshift name)"


def test_db_name_must_not_be_empty() -> None:
    assert problem_of(with_fields(SERVERLESS, db_name=""), "db_name").startswith("must be")


# --- the extra fields real users need --------------------------------------------------------


def test_db_groups_must_be_an_array_of_group_names() -> None:
    assert problem_of(with_fields(PROVISIONED, db_groups="readers"), "db_groups").startswith(
        "must be an array of strings"
    )
    message = problem_of(with_fields(PROVISIONED, db_groups=["ok", "not ok"]), "db_groups")
    assert message.startswith("every entry must be Redshift group names")
    assert "'not ok'" in message


def test_auto_create_must_be_a_json_boolean() -> None:
    message = problem_of(with_fields(PROVISIONED, auto_create="yes"), "auto_create")

    assert message == "must be a JSON boolean (true or false), got a string"


@pytest.mark.parametrize("name", ["a", "has space", "s" * 65])
def test_role_session_name_follows_sts_rules(name: str) -> None:
    message = problem_of(with_fields(AURORA, role_session_name=name), "role_session_name")

    assert message.startswith("must be 2 to 64 characters of letters, digits and +=,.@-")


@pytest.mark.parametrize(("port", "shown"), [(0, "0"), (65536, "65536"), ("5432", "a string")])
def test_port_must_be_an_integer_from_1_to_65535(port: Any, shown: str) -> None:
    message = problem_of(with_fields(AURORA, port=port), "port")

    assert message == f"must be an integer from 1 to 65535, got {shown}"


# --- unknown keys ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("regoin", "region"),
        ("db_user_name", "db_username"),
        ("rolearn", "role_arn"),
        ("externalid", "external_id"),
        ("session_durations", "session_duration"),
        ("workgroup", "workgroup_name"),
    ],
)
def test_unknown_key_is_named_with_a_did_you_mean_hint(typo: str, meant: str) -> None:
    message = problem_of(with_fields(AURORA, **{typo: "x"}), typo)

    assert message.startswith(f"unknown field; did you mean {meant!r}?")


def test_unknown_key_without_a_close_match_lists_the_allowed_fields() -> None:
    message = problem_of(with_fields(AURORA, color="blue"), "color")

    assert message == f"unknown field (allowed: {', '.join(FIELD_NAMES)})"


def test_every_unknown_key_is_reported() -> None:
    err = config_error(with_fields(AURORA, colour="blue", regoin="eu-west-1", **{"1": 2}))

    assert err.fields == ["1", "colour", "regoin"]


def test_unknown_key_typo_of_region_names_the_field_it_meant() -> None:
    # region itself may be left out (it then comes from the endpoint's host): the typo remains.
    err = config_error(with_fields(AURORA, region=..., regoin="us-east-1"))

    assert err.fields == ["regoin"]
    assert "did you mean 'region'?" in str(err)


# --- documents that are not a block ----------------------------------------------------------


def test_invalid_json_names_line_and_column_without_echoing_the_document() -> None:
    document = (
        '{\n  "aws_iam": {\n    "external_id": "hunter2-secret",\n    "enabled": true,\n  }\n}'
    )

    err = config_error(document)

    assert err.fields == ["encrypted_extra"]
    assert err.errors[0].message.startswith("invalid JSON at line 5 column 3: ")
    assert "hunter2-secret" not in str(err)


@pytest.mark.parametrize(
    "document",
    ["", "   ", "{", "aws_iam", "{'aws_iam': {}}", b"\xff\xfe\xfa"],
    ids=["empty", "blank", "unclosed", "bare word", "python quotes", "undecodable bytes"],
)
def test_text_that_is_not_json_is_a_config_error(document: str | bytes) -> None:
    err = config_error(document)

    assert err.fields == ["encrypted_extra"]
    assert err.errors[0].message.startswith("invalid JSON")


def test_deeply_nested_json_is_a_config_error() -> None:
    err = config_error("[" * 100_000 + "]" * 100_000)

    assert err.errors == [
        ConfigProblem("encrypted_extra", "invalid JSON: arrays or objects are nested too deeply")
    ]


def test_an_integer_beyond_the_digit_limit_is_a_config_error() -> None:
    err = config_error('{"session_duration": ' + "9" * 5000 + "}")

    assert err.errors == [
        ConfigProblem("encrypted_extra", "invalid JSON: a number has too many digits")
    ]


@pytest.mark.parametrize(
    ("extra", "kind"),
    [
        ("[]", "an array"),
        ("42", "a number"),
        ('"aws_iam"', "a string"),
        ("true", "a boolean"),
        ("null", "null"),
        ({"aws_iam": None}, "null"),
        ({"aws_iam": ["enabled"]}, "an array"),
        ('{"aws_iam": "{}"}', "a string"),
    ],
)
def test_a_block_that_is_not_an_object_is_a_config_error(extra: Any, kind: str) -> None:
    err = config_error(extra)

    assert err.errors == [ConfigProblem("aws_iam", f"must be a JSON object, got {kind}")]


# --- one error for every problem -------------------------------------------------------------


def test_every_problem_is_reported_at_once_in_one_config_error() -> None:
    block = {
        "enabled": "yes",
        "region": "Virginia",
        "role_arn": "arn:aws:iam::42:role/x",
        "external_id": "!",
        "session_duration": 60,
        "workgroup_name": "my-workgroup",
        "cluster_identifier": "my-cluster",
        "colour": "blue",
    }

    err = config_error(block)

    assert err.fields == [
        "colour",
        "enabled",
        "region",
        "role_arn",
        "external_id",
        "session_duration",
        "cluster_identifier",
        "db_name",
    ]
    assert str(err).startswith("invalid aws_iam configuration (8 problems):\n")
    assert len(str(err).splitlines()) == 1 + 8


def test_config_error_is_a_value_error_and_an_iampool_error() -> None:
    err = config_error({})

    assert isinstance(err, ValueError)
    assert isinstance(err, IamPoolError)


# --- nothing but AwsIamConfig or ConfigError, whatever comes in ------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=16,
)
plausible_values = st.sampled_from(
    [
        True,
        False,
        "us-east-1",
        "arn:aws:iam::123456789012:role/reader",
        "superset-prod-12345",
        900,
        3600,
        43200,
        "app",
        "PUBLIC",
        "my-cluster",
        "my-workgroup",
        "dev",
        ["readers"],
        5432,
    ]
)
field_keys = st.sampled_from([*FIELD_NAMES, "aws_iam", "regoin"]) | st.text(max_size=12)


def mutate(base: dict[str, Any], changes: dict[str, Any], removed: set[str]) -> dict[str, Any]:
    return {key: value for key, value in {**base, **changes}.items() if key not in removed}


# Blocks near a valid one reach the success path; free-form ones probe every failure path.
near_valid_blocks = st.builds(
    mutate,
    st.sampled_from([AURORA, PROVISIONED, SERVERLESS, json.loads(SUPERSET_AURORA)["aws_iam"]]),
    st.dictionaries(field_keys, plausible_values | json_values, max_size=3),
    st.sets(st.sampled_from(FIELD_NAMES), max_size=2),
)
blocks = near_valid_blocks | st.dictionaries(
    field_keys, plausible_values | json_values, max_size=12
)
extras = json_values | blocks | st.builds(lambda block: {"aws_iam": block}, blocks)


def parse(extra: Any) -> AwsIamConfig | ConfigError:
    try:
        return AwsIamConfig.from_extra(extra)
    except ConfigError as err:
        return err


def parses_or_raises_config_error(extra: Any) -> None:
    result = parse(extra)  # anything but ConfigError propagates and fails the test

    if isinstance(result, ConfigError):
        assert result.errors
        assert all(isinstance(problem, ConfigProblem) for problem in result.errors)
    else:
        assert isinstance(result, AwsIamConfig)
        assert AwsIamConfig.from_extra(result.to_dict()) == result
        hash(result)


@settings(max_examples=400)
@given(extras)
def test_any_json_value_gives_a_config_or_a_config_error(extra: Any) -> None:
    parses_or_raises_config_error(extra)


@settings(max_examples=300)
@given(extras)
def test_any_json_document_gives_a_config_or_a_config_error(extra: Any) -> None:
    parses_or_raises_config_error(json.dumps(extra))


@settings(max_examples=300)
@given(st.text() | st.binary())
def test_any_text_or_bytes_give_a_config_or_a_config_error(extra: str | bytes) -> None:
    parses_or_raises_config_error(extra)
