"""The ``iampool`` command, run as a user runs it: a subprocess, against the local stand-ins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import asyncpg
import pytest

pytestmark = pytest.mark.anyio


def iampool(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "iampool", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env if env is not None else dict(os.environ),
        check=False,
    )


def test_demo_runs_everything_locally_on_one_assume_role() -> None:
    result = iampool("demo", "--json", "--queries", "2000", "--workers", "32")

    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["ok"] is True
    assert summary["sts_assume_role_calls"] == 1
    assert summary["tokens_signed"] == 1
    assert summary["errors"] == 0
    assert summary["queries"] == 2000
    assert 1 <= summary["connections_opened"] <= 10
    assert summary["identity"] == "iam_demo"


def test_demo_falls_back_to_an_embedded_postgres() -> None:
    env = {**os.environ, "IAMPOOL_DEMO_EMBEDDED": "1"}
    result = iampool("demo", "--json", "--queries", "300", env=env)

    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["postgres"] == "embedded pgserver"
    assert summary["sts_assume_role_calls"] == 1
    assert summary["errors"] == 0


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
        user="app",
        password=token,
        database="postgres",
        ssl=gateway.client_ssl_context(),
    )
    try:
        assert await connection.fetchval("SELECT current_user") == "app"
    finally:
        await connection.close()


@pytest.mark.parametrize("database", ["iam_postgres", "iam_mysql"])
def test_check_reports_identity_tls_and_timings(
    database: str, request: pytest.FixtureRequest, fake_aws: Any
) -> None:
    db = request.getfixturevalue(database)
    extra = json.dumps(db.config.to_dict())
    result = iampool("check", db.dsn, "--extra", extra)

    assert result.returncode == 0, result.stderr
    lines = dict(line.split(None, 1) for line in result.stdout.splitlines() if line.strip())
    report = result.stdout
    assert "identity" in report
    assert " app" in report
    assert "sslmode=verify-full (client)" in report
    assert "connect + query" in report
    assert lines  # one "name  value" pair per line
    assert fake_aws.base_key.secret_access_key not in report + result.stderr
    assert "X-Amz-Signature" not in report + result.stderr


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
