"""The ``iampool`` command, run as a user runs it: a subprocess, against the local stand-ins."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.users import APP, IAM_APP

pytestmark = pytest.mark.anyio

PG_ADMIN_DSN = (
    os.environ.get("IAMPOOL_TEST_PG_DSN") or "postgresql://postgres@127.0.0.1:5432/postgres"
)
RDS_BLOCK = json.dumps({"enabled": True, "region": "us-east-1", "db_username": "app"})


def iampool(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "iampool", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env if env is not None else dict(os.environ),
        check=False,
    )


def report_lines(stdout: str) -> dict[str, str]:
    """``iampool check``'s report: name -> value (names are padded with two spaces or more)."""
    pairs = [re.split(r" {2,}", line, maxsplit=1) for line in stdout.splitlines() if line]
    return {pair[0]: pair[1] for pair in pairs}


async def role_exists(name: str) -> bool:
    connection = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        return bool(await connection.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name))
    finally:
        await connection.close()


@pytest.fixture(scope="module")
def redshift_cluster(fake_aws: Any) -> Iterator[tuple[str, dict[str, Any], dict[str, str]]]:
    """A Redshift cluster behind a gateway of this module's own: DSN, block, subprocess env.

    Not the session's ``iam_redshift``: moto's state is process-wide, and test_fake_aws.py resets
    it, so a cluster made this early in the session would be gone for the later Redshift tests.
    """
    from iampool.testing import IamGateway

    gateway = IamGateway(
        "postgresql", upstream=PG_ADMIN_DSN, authority=fake_aws, region=fake_aws.region,
        mode="redshift",
    )  # fmt: skip
    with gateway:
        fake_aws.create_redshift_cluster(
            "iampool-cli-test", db_name="postgres", address=gateway.host, port=gateway.port
        )
        gateway.ensure_user(IAM_APP)
        block = {
            "enabled": True,
            "region": fake_aws.region,
            "role_arn": fake_aws.create_role("iampool-cli-redshift"),
            "db_username": APP,
            "cluster_identifier": "iampool-cli-test",
            "db_name": "postgres",
        }
        # redshift-connector trusts only the default store: the CLI gets the gateway's CA there.
        env = {**os.environ, "SSL_CERT_FILE": str(gateway.ca_path)}
        yield gateway.dsn(IAM_APP, "postgres"), block, env


# --- demo -------------------------------------------------------------------------------------


def test_demo_runs_everything_locally_on_one_assume_role() -> None:
    result = iampool("demo", "--json", "--queries", "2000", "--workers", "32")

    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["ok"] is True
    assert summary["problems"] == []
    assert summary["sts_assume_role_calls"] == 1
    assert summary["tokens_signed"] == 1
    assert summary["errors"] == 0
    assert summary["queries"] == summary["queries_requested"] == 2000
    assert 1 <= summary["connections_opened"] <= 10
    assert summary["identity"] == summary["login_role"]
    assert summary["login_role"].startswith("iam_demo_")


async def test_demo_drops_the_login_role_it_created() -> None:
    result = iampool("demo", "--json", "--queries", "200", "--workers", "8")

    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["login_role_dropped"] is True
    assert not await role_exists(summary["login_role"])


async def test_demo_leaves_a_login_role_that_existed_before() -> None:
    from iampool.demo import _RoleCleanup

    name = "iam_demo_preexisting_test"
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'DROP ROLE IF EXISTS "{name}"; CREATE ROLE "{name}" LOGIN')
        cleanup = _RoleCleanup(PG_ADMIN_DSN, name)
        async with cleanup.dropped_afterwards():
            pass

        assert cleanup.dropped is False
        assert await role_exists(name)
    finally:
        await admin.execute(f'DROP ROLE IF EXISTS "{name}"')
        await admin.close()


def test_demo_says_in_a_sentence_what_it_proved_and_labels_queueing() -> None:
    result = iampool("demo", "--queries", "300", "--workers", "6", "--pool-size", "3")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == (
        "Proved: 300 queries from 6 workers ran over 3 connections whose every login was "
        "checked as an RDS IAM token, and the whole run cost 1 STS AssumeRole call and "
        "1 RDS auth token."
    )
    queueing = next(line for line in lines if "queueing p50 / p99" in line)
    assert "waiting for a free connection (6 workers share 3; not iampool's cost)" in queueing
    assert not any("acquire" in line for line in lines)


def test_demo_falls_back_to_an_embedded_postgres_without_leaking_warnings() -> None:
    env = {**os.environ, "IAMPOOL_DEMO_EMBEDDED": "1"}
    env.pop("XDG_RUNTIME_DIR", None)  # platformdirs warns about it when pgserver is imported
    result = iampool("demo", "--json", "--queries", "300", env=env)

    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["postgres"] == "embedded pgserver"
    assert summary["sts_assume_role_calls"] == 1
    assert summary["errors"] == 0
    assert "Warning" not in result.stderr
    assert all(line.startswith("iampool demo: ") for line in result.stderr.splitlines())


# --- usage errors: exit 2, one line, before any AWS call ----------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["demo", "--queries", "0"], "iampool demo: argument --queries: must be 1 or more, got 0"),
        (["demo", "--pool-size", "0"], "argument --pool-size: must be 1 or more, got 0"),
        (["demo", "--queries", "many"], "argument --queries: must be a whole number, got 'many'"),
        (["token", "--extra", RDS_BLOCK, "--port", "5432"], "--host is required for RDS"),
        (["token", "--extra", RDS_BLOCK, "--host", "db.example"], "--port is required for RDS"),
        (
            ["token", "--extra", RDS_BLOCK, "--host", "db.example", "--port", "70000"],
            "argument --port: must be a port from 1 to 65535, got 70000",
        ),
        (["token", "--extra", "/no/such/block.json", "--host", "h", "--port", "1"], "no file"),
        (
            [
                "check",
                "postgresql://db.example/app",
                "--extra",
                RDS_BLOCK,
                "--sslrootcert",
                "/no/ca.pem",
            ],
            "iampool check: --sslrootcert: no file '/no/ca.pem'",
        ),
        (
            ["check", f"postgresql://db.example/app?sslrootcert={__file__}", "--extra", RDS_BLOCK],
            "holds no PEM certificate",
        ),
        ([], "the following arguments are required: COMMAND"),
    ],
    ids=[
        "no-queries",
        "empty-pool",
        "queries-not-a-number",
        "token-without-host",
        "token-without-port",
        "port-out-of-range",
        "missing-extra-file",
        "missing-ca-file",
        "ca-file-not-pem",
        "no-command",
    ],
)
def test_a_usage_error_exits_2_with_one_line_before_any_aws_call(
    args: list[str], message: str, fake_aws: Any
) -> None:
    calls_before = sum(fake_aws.calls.values())

    result = iampool(*args)

    assert result.returncode == 2, result.stdout + result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert sum(fake_aws.calls.values()) == calls_before


def test_a_ca_file_for_redshift_is_a_usage_error_before_any_aws_call(
    iam_postgres: Any, fake_aws: Any
) -> None:
    calls_before = sum(fake_aws.calls.values())
    block = {
        "enabled": True,
        "region": "us-east-1",
        "cluster_identifier": "analytics",
        "db_username": "app",
        "db_name": "dev",
    }

    result = iampool(
        "check",
        "redshift://analytics.abc123.us-east-1.redshift.amazonaws.com/dev",
        "--extra",
        json.dumps(block),
        "--sslrootcert",
        str(iam_postgres.ca_path),  # a real PEM file
    )

    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip() == (
        "iampool check: sslrootcert: redshift-connector cannot take a CA file: it trusts the "
        "system store (SSL_CERT_FILE) and Amazon's CAs"
    )
    assert sum(fake_aws.calls.values()) == calls_before


# Issue 12, finding 4: every bad argument is a one-line usage error, exit 2, before AWS.
MYSQL_BLOCK = RDS_BLOCK


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["token", "--extra", "{BAD_UTF8}", "--host", "h", "--port", "1"],
            "--extra: '{BAD_UTF8}' is not UTF-8 text",
        ),
        (
            ["token", "--extra", "/dev/zero", "--host", "h", "--port", "1"],
            "--extra: '/dev/zero' holds more than 1 MiB: not an aws_iam block",
        ),
        (["token", "--extra", "/", "--host", "h", "--port", "1"], "cannot read '/': Is a dir"),
        (
            ["token", "--extra", RDS_BLOCK, "--host", "h", "--port", "\u0665\u0664\u0663\u0662"],
            "argument --port: must be a port number, got",
        ),
        (
            ["token", "--extra", RDS_BLOCK, "--host", "h", "--port", "5_432"],
            "argument --port: must be a port number, got '5_432'",
        ),
        (
            ["token", "--extra", '{"enabled": true, "regoin": "x"}', "--host", "h", "--port", "1"],
            "invalid aws_iam configuration (2 problems): regoin: unknown field",
        ),
        (
            [
                "check",
                "mysql://app@db.example/app?read_default_file=/etc/my.cnf",
                "--extra",
                MYSQL_BLOCK,
            ],
            "read_default_file: reads host, port, socket, user and password from an option file",
        ),
        (
            ["check", "mysql://app@db.example/app?local_infile=1", "--extra", MYSQL_BLOCK],
            "local_infile: would let the server read any file this process can read",
        ),
        (
            ["check", "postgresql://other@db.example/app", "--extra", RDS_BLOCK],
            "dsn: names user 'other' but aws_iam.db_username is 'app'",
        ),
        (
            ["check", "postgresql://app@db.example/app?sslrootcert=/", "--extra", RDS_BLOCK],
            "sslrootcert: cannot read '/': Is a directory",
        ),
        (["demo", "--workers", "9" * 5000], "argument --workers: must be a whole number, got"),
    ],
    ids=[
        "extra-not-utf8",
        "extra-endless",
        "extra-directory",
        "port-other-digits",
        "port-underscore",
        "config-error-on-one-line",
        "mysql-option-file",
        "mysql-local-infile",
        "dsn-other-user",
        "dsn-ca-directory",
        "count-5000-digits",
    ],
)
def test_a_bad_argument_is_one_line_exit_2_before_any_aws_call(
    args: list[str], message: str, fake_aws: Any, tmp_path: Path
) -> None:
    bad_utf8 = tmp_path / "block.json"
    bad_utf8.write_bytes(b'{"enabled": true, "region": "\xff"}')
    args = [arg.replace("{BAD_UTF8}", str(bad_utf8)) for arg in args]
    message = message.replace("{BAD_UTF8}", str(bad_utf8))
    calls_before = sum(fake_aws.calls.values())

    result = iampool(*args)

    assert result.returncode == 2, result.stdout + result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert message in result.stderr
    assert len(result.stderr) < 4096
    assert result.stdout == ""
    assert sum(fake_aws.calls.values()) == calls_before


def test_a_block_on_standard_input_that_is_not_utf8_is_a_usage_error(fake_aws: Any) -> None:
    calls_before = sum(fake_aws.calls.values())
    result = subprocess.run(
        [sys.executable, "-m", "iampool", "token", "--extra", "-", "--host", "h", "--port", "1"],
        input=b'{"enabled": true, "region": "\xff\xfe"}',
        capture_output=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2, result.stderr
    assert result.stderr.decode().strip() == (
        "iampool token: encrypted_extra: invalid JSON: the bytes are not UTF-8, UTF-16 or "
        "UTF-32 text"
    )
    assert sum(fake_aws.calls.values()) == calls_before


@pytest.mark.parametrize("command", ["token", "check", "demo"])
def test_each_command_has_a_description_and_an_example_in_its_help(command: str) -> None:
    result = iampool(command, "--help")

    assert result.returncode == 0, result.stderr
    description = result.stdout.split("\n\n")[1]  # after the usage paragraph
    assert len(description.split()) > 15
    assert "\nexample" in result.stdout
    examples = result.stdout.split("\nexample", 1)[1]
    assert f"iampool {command}" in examples


# --- token --------------------------------------------------------------------------------------


async def test_token_prints_a_token_the_gateway_accepts(iam_postgres: Any, fake_aws: Any) -> None:
    gateway = iam_postgres.gateway
    extra = json.dumps({"aws_iam": iam_postgres.config.to_dict()})
    result = iampool("token", "--extra", extra, "--host", gateway.host, "--port", str(gateway.port))

    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert token.startswith(f"{gateway.host}:{gateway.port}/?")
    connection = await asyncpg.connect(
        host=gateway.host,
        port=gateway.port,
        user=iam_postgres.user,
        password=token,
        database="postgres",
        ssl=gateway.client_ssl_context(),
    )
    try:
        assert await connection.fetchval("SELECT current_user") == iam_postgres.user
    finally:
        await connection.close()


def test_token_reads_the_block_from_a_file(
    iam_postgres: Any, fake_aws: Any, tmp_path: Path
) -> None:
    gateway = iam_postgres.gateway
    block = tmp_path / "block.json"
    block.write_text(json.dumps(iam_postgres.config.to_dict()), encoding="utf-8")

    result = iampool(
        "token", "--extra", str(block), "--host", gateway.host, "--port", str(gateway.port)
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{gateway.host}:{gateway.port}/?Action=connect")


# --- check --------------------------------------------------------------------------------------


@pytest.mark.parametrize("database", ["iam_postgres", "iam_mysql"])
def test_check_reports_identity_tls_and_timings(
    database: str, request: pytest.FixtureRequest, fake_aws: Any
) -> None:
    db = request.getfixturevalue(database)
    extra = json.dumps(db.config.to_dict())
    result = iampool("check", db.dsn, "--extra", extra)

    assert result.returncode == 0, result.stderr
    report = report_lines(result.stdout)
    assert report["identity"].startswith(db.user)
    assert report["AWS credentials"].startswith("assume-role arn:aws:iam::")
    assert report["connect + query"].endswith(" ms")
    assert report["TLS"] == (
        f"sslmode=verify-full: encrypted, certificate and host name verified against {db.ca_path}"
    )
    # The gateway ends TLS and relays in plain text: the server knows only that much.
    assert (
        "reports this session unencrypted: TLS ends at something in between"
        in (report["server TLS"])
    )
    assert fake_aws.base_key.secret_access_key not in result.stdout + result.stderr
    assert "X-Amz-Signature" not in result.stdout + result.stderr


def test_check_reports_the_verify_full_that_a_ca_turns_require_into(
    iam_postgres: Any, fake_aws: Any
) -> None:
    gateway = iam_postgres.gateway
    dsn = f"postgresql://{APP}@{gateway.host}:{gateway.port}/postgres"  # sslmode: require
    extra = json.dumps(iam_postgres.config.to_dict())

    result = iampool("check", dsn, "--extra", extra, "--sslrootcert", str(iam_postgres.ca_path))

    assert result.returncode == 0, result.stderr
    assert report_lines(result.stdout)["TLS"].startswith("sslmode=verify-full: encrypted, ")


def test_check_without_a_ca_reports_an_unverified_certificate(
    iam_postgres: Any, fake_aws: Any
) -> None:
    gateway = iam_postgres.gateway
    dsn = f"postgresql://{APP}@{gateway.host}:{gateway.port}/postgres"
    extra = json.dumps(iam_postgres.config.to_dict())

    result = iampool("check", dsn, "--extra", extra)

    assert result.returncode == 0, result.stderr
    tls = report_lines(result.stdout)["TLS"]
    assert tls == "sslmode=require: encrypted, server certificate not verified"


def test_check_against_redshift_claims_nothing_about_the_server_side(
    redshift_cluster: tuple[str, dict[str, Any], dict[str, str]],
) -> None:
    dsn, block, env = redshift_cluster

    result = iampool("check", dsn, "--extra", json.dumps(block), env=env)

    assert result.returncode == 0, result.stderr
    report = report_lines(result.stdout)
    assert report["identity"] == IAM_APP
    assert report["TLS"].startswith("sslmode=verify-full: encrypted, certificate and host name")
    assert report["server TLS"].startswith("not checked")
    assert "unencrypted" not in result.stdout


# --- configuration and AWS failures -------------------------------------------------------------


def test_an_invalid_block_exits_2_naming_the_fields() -> None:
    result = iampool("token", "--extra", '{"enabled": true, "regoin": "us-east-1"}', "--port", "1")

    assert result.returncode == 2
    assert "regoin" in result.stderr
    assert "region" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreachable_aws_exits_1_with_a_credential_error(fake_aws: Any) -> None:
    env = {**os.environ, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}  # nothing listens there
    extra = json.dumps(
        {
            "enabled": True,
            "region": "us-east-1",
            "role_arn": "arn:aws:iam::123456789012:role/nowhere",
            "db_username": "app",
        }
    )
    result = iampool("token", "--extra", extra, "--host", "db.example", "--port", "5432", env=env)

    assert result.returncode == 1
    assert "Unable to assume IAM role arn:aws:iam::123456789012:role/nowhere" in result.stderr
    assert "cannot reach the AWS endpoint" in result.stderr
    assert "Traceback" not in result.stderr
