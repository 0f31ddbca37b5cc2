"""The exception tree: one root, and each error carries what a caller needs, never a secret."""

from __future__ import annotations

import pytest

import iampool
from iampool import (
    AuthTokenRejected,
    ConfigError,
    ConfigProblem,
    CredentialError,
    IamAuthDisabledError,
    IamPoolError,
    PoolClosedError,
    TlsNotOfferedError,
)


@pytest.mark.parametrize(
    "error_class",
    [
        ConfigError,
        IamAuthDisabledError,
        CredentialError,
        AuthTokenRejected,
        TlsNotOfferedError,
        PoolClosedError,
    ],
)
def test_every_error_is_an_iampool_error(error_class: type[Exception]) -> None:
    assert issubclass(error_class, IamPoolError)


def test_pool_closed_error_is_a_runtime_error() -> None:
    # aiomysql's pool raises RuntimeError once closed: code catching that keeps working.
    assert issubclass(PoolClosedError, RuntimeError)


def test_iampool_error_is_an_exception() -> None:
    assert issubclass(IamPoolError, Exception)
    assert not issubclass(IamPoolError, ValueError)


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_tls_not_offered_error_is_a_connection_error() -> None:
    assert issubclass(TlsNotOfferedError, ConnectionError)
    assert issubclass(TlsNotOfferedError, OSError)


@pytest.mark.parametrize(
    "error_class",
    [IamAuthDisabledError, CredentialError, AuthTokenRejected, TlsNotOfferedError, PoolClosedError],
)
def test_only_config_error_is_a_value_error(error_class: type[Exception]) -> None:
    assert not issubclass(error_class, ValueError)


def test_every_exported_exception_derives_from_iampool_error() -> None:
    exported = [getattr(iampool, name) for name in iampool.__all__]
    exceptions = [obj for obj in exported if isinstance(obj, type) and issubclass(obj, Exception)]

    assert exceptions  # the tree is exported at all
    assert all(issubclass(exc, IamPoolError) for exc in exceptions)


# --- ConfigError -----------------------------------------------------------------------------


def test_config_error_with_one_problem_says_one_problem() -> None:
    err = ConfigError(ConfigProblem("region", "is required"))

    assert str(err) == "invalid aws_iam configuration (1 problem):\n  - region: is required"
    assert err.errors == [ConfigProblem("region", "is required")]
    assert err.fields == ["region"]


def test_config_error_lists_one_line_per_problem_after_the_count() -> None:
    problems = [
        ConfigProblem("enabled", "is required (true or false)"),
        ConfigProblem("region", "is required"),
        ConfigProblem("regoin", "unknown field; did you mean 'region'?"),
    ]

    err = ConfigError(problems)

    assert str(err).splitlines() == [
        "invalid aws_iam configuration (3 problems):",
        "  - enabled: is required (true or false)",
        "  - region: is required",
        "  - regoin: unknown field; did you mean 'region'?",
    ]
    assert err.fields == ["enabled", "region", "regoin"]
    assert err.errors == problems


def test_config_error_context_names_what_was_invalid() -> None:
    problem = ConfigProblem("scheme", "must be postgresql, mysql or redshift")

    err = ConfigError(problem, context="DSN")

    assert str(err).startswith("invalid DSN configuration (1 problem):")
    assert err.context == "DSN"


def test_config_problem_reads_field_colon_message() -> None:
    assert str(ConfigProblem("port", "must be an integer")) == "port: must be an integer"


def test_config_problem_is_immutable_and_comparable() -> None:
    problem = ConfigProblem("region", "is required")

    assert problem == ConfigProblem("region", "is required")
    assert hash(problem) == hash(ConfigProblem("region", "is required"))
    with pytest.raises(AttributeError):
        problem.field = "other"  # type: ignore[misc]


# --- errors carrying context -----------------------------------------------------------------


def test_credential_error_carries_aws_code_and_target() -> None:
    err = CredentialError(
        "AssumeRole on arn:aws:iam::222222222222:role/reader failed: AccessDenied",
        code="AccessDenied",
        target="arn:aws:iam::222222222222:role/reader",
    )

    assert err.code == "AccessDenied"
    assert err.target == "arn:aws:iam::222222222222:role/reader"
    assert "AccessDenied" in str(err)


def test_credential_error_code_and_target_default_to_none() -> None:
    err = CredentialError("the AWS endpoint could not be reached")

    assert err.code is None
    assert err.target is None


def test_auth_token_rejected_carries_server_message_user_and_endpoint() -> None:
    err = AuthTokenRejected(
        'the database refused IAM credentials for "app" at db.example:5432',
        server_message='PAM authentication failed for user "app"',
        user="app",
        endpoint="db.example:5432",
    )

    assert err.server_message == 'PAM authentication failed for user "app"'
    assert err.user == "app"
    assert err.endpoint == "db.example:5432"


def test_one_except_clause_catches_anything_iampool_raises() -> None:
    raised: list[IamPoolError] = [
        ConfigError(ConfigProblem("region", "is required")),
        IamAuthDisabledError("AWS IAM database authentication is not enabled."),
        CredentialError("throttled", code="Throttling"),
        AuthTokenRejected("refused", server_message="denied", user="app", endpoint="db:5432"),
        TlsNotOfferedError("the server did not offer TLS"),
    ]

    caught = []
    for error in raised:
        try:
            raise error
        except IamPoolError as exc:
            caught.append(exc)

    assert caught == raised
