"""No secret in a DEBUG log, whatever library wrote it (DESIGN §4 invariant 11).

``logging.basicConfig(level=logging.DEBUG)`` is what a user does first when a connection
fails; with it, botocore used to write the AssumeRole response (``SecretAccessKey``,
``SessionToken``), Redshift passwords, the ExternalId and SigV4 signatures. Here a program does
exactly that, in a process of its own, and mints through iampool with the real aiobotocore client
against FakeAws: an AssumeRole with an external ID, an RDS token, an Aurora DSQL token, Redshift
provisioned ``DescribeClusters`` + ``GetClusterCredentials`` and Serverless ``GetWorkgroup`` +
``GetCredentials``; once with logging configured before iampool is imported, once after, and in
a forked and a spawned child. Its log (stderr) must hold no secret in any form, and botocore's
DEBUG lines must all still be there.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import uuid
from io import StringIO
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, quote_plus, urlsplit

import pytest

from iampool import AwsIamConfig, CredentialCache, auth_for
from iampool.testing import FakeAws

pytestmark = pytest.mark.anyio

PROGRAM = """
import asyncio, json, logging, multiprocessing, os, sys

FORMAT = "%(processName)s %(name)s %(levelname)s %(message)s"
if os.environ["LOGGING_CONFIGURED"] == "before":
    logging.basicConfig(level=logging.DEBUG, format=FORMAT)  # spawned children run this too

from iampool import AwsIamConfig, CredentialCache, auth_for

if os.environ["LOGGING_CONFIGURED"] == "after":
    logging.basicConfig(level=logging.DEBUG, format=FORMAT)

PLAN = json.loads(os.environ["MINTING_PLAN"])


async def mint():
    cache = CredentialCache()
    try:
        passwords = []
        for block, host, port in PLAN["mint"]:
            auth = auth_for(AwsIamConfig.from_extra(block), host=host, port=port, cache=cache)
            passwords.append((await auth.credentials()).password)
        return passwords
    finally:
        await cache.aclose()


def child(queue):
    queue.put(asyncio.run(mint()))


if __name__ == "__main__":
    passwords = asyncio.run(mint())
    for method in PLAN["children"]:
        context = multiprocessing.get_context(method)
        queue = context.Queue()
        worker = context.Process(target=child, args=(queue,))
        worker.start()
        passwords += queue.get(timeout=60)
        worker.join(60)
    print(json.dumps(passwords))
"""

# What botocore writes at DEBUG for the calls, in every process: it must still be written.
BOTOCORE_LINES = [
    "botocore.endpoint DEBUG Making request for OperationModel(name=AssumeRole)",
    "botocore.endpoint DEBUG Making request for OperationModel(name=DescribeClusters)",
    "botocore.endpoint DEBUG Making request for OperationModel(name=GetClusterCredentials)",
    "botocore.endpoint DEBUG Making request for OperationModel(name=GetWorkgroup)",
    "botocore.endpoint DEBUG Making request for OperationModel(name=GetCredentials)",
    "botocore.endpoint DEBUG Sending http request: <AWSPreparedRequest",
    "botocore.auth DEBUG Calculating signature using v4 auth.",
    "botocore.auth DEBUG CanonicalRequest:",
    "botocore.auth DEBUG StringToSign:",
    "botocore.auth DEBUG Signature:\n[REDACTED]",
    "botocore.parsers DEBUG Response headers:",
    "botocore.parsers DEBUG Response body:",
    "'ExternalId': '[REDACTED]'",
    "'X-Amz-Security-Token': b'[REDACTED]'",
    "'Authorization': b'[REDACTED]'",
    "x-amz-security-token:[REDACTED]\n",
    "<SecretAccessKey>[REDACTED]</SecretAccessKey><SessionToken>[REDACTED]</SessionToken>",
    "<DbUser>IAM:app</DbUser><DbPassword>[REDACTED]</DbPassword>",
    '"dbPassword": "[REDACTED]"',
]


def forms(secret: str) -> list[str]:
    return [
        secret,
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
        json.dumps(secret)[1:-1],
    ]


def signature_of(token: str) -> str:
    [signature] = parse_qs(urlsplit(f"https://{token}").query)["X-Amz-Signature"]
    return signature


@pytest.fixture
def plan(fake_aws: FakeAws) -> dict[str, Any]:
    """A role that demands an external ID, a cluster and a workgroup of this test's own; what to
    mint: an RDS token, a DSQL token, and a provisioned and a Serverless password, each found by
    its endpoint API (no host given)."""
    name = f"iampool-logs-{uuid.uuid4().hex[:10]}"
    external_id = f"ext-{uuid.uuid4().hex}"
    role_arn = fake_aws.create_role(name, external_id=external_id)
    fake_aws.create_redshift_cluster(name, db_name="dev", address="127.0.0.1", port=5439)
    fake_aws.create_workgroup(name, db_name="dev", address="127.0.0.1", port=5439)
    block = {
        "enabled": True,
        "region": fake_aws.region,
        "role_arn": role_arn,
        "external_id": external_id,
    }
    rds = {**block, "db_username": "app"}
    dsql = {**block, "dsql": True, "db_username": "admin"}
    provisioned = {**block, "db_username": "app", "cluster_identifier": name, "db_name": "dev"}
    serverless = {**block, "workgroup_name": name, "db_name": "dev"}
    return {
        "external_id": external_id,
        "mint": [
            [rds, "db.example.com", 5432],
            [dsql, "abc.dsql.us-east-1.on.aws", 5432],
            [provisioned, None, None],
            [serverless, None, None],
        ],
    }


def secrets_of(fake_aws: FakeAws, plan: dict[str, Any], passwords: list[str]) -> list[str]:
    """Everything that must not be logged: what FakeAws issued (secret keys, session tokens,
    Redshift passwords), the external ID, and the tokens' signatures."""
    tokens = [password for password in passwords if "X-Amz-Signature=" in password]
    return [*fake_aws.issued_secrets(), plan["external_id"], *map(signature_of, tokens)]


def found_in(log: str, secrets: list[str]) -> list[str]:
    """The secrets (by number, never quoted) any form of which is in ``log``."""
    return [
        f"secret #{n}"
        for n, secret in enumerate(secrets)
        if any(form in log for form in forms(secret))
    ]


def records_by_process(log: str) -> dict[str, str]:
    """The log's records by the kind of process that wrote them (``MainProcess``,
    ``ForkProcess``, ``SpawnProcess``), without that prefix; a record may span lines."""
    records: dict[str, list[str]] = {}
    lines: list[str] = []
    for line in log.splitlines():
        starts = re.match(r"(MainProcess|ForkProcess|SpawnProcess)(?:-\d+)? ", line)
        if starts:
            lines = records.setdefault(starts[1], [])
            line = line[starts.end() :]
        lines.append(line)
    return {process: "\n".join(lines) for process, lines in records.items()}


def run_program(
    tmp_path: Path, fake_aws: FakeAws, plan: dict[str, Any], configured: str, children: list[str]
) -> tuple[str, list[str]]:
    """Run PROGRAM; its log (stderr) and the passwords it minted (stdout)."""
    program = tmp_path / "first_move.py"
    program.write_text(PROGRAM)
    environment = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    environment.update(
        fake_aws.env(),
        LOGGING_CONFIGURED=configured,
        MINTING_PLAN=json.dumps({"mint": plan["mint"], "children": children}),
    )
    done = subprocess.run(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, str(program)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr, json.loads(done.stdout)


@pytest.mark.parametrize(
    ("configured", "children"),
    [("before", ["fork", "spawn"]), ("after", [])],
    ids=["logging-configured-before-import-with-forked-and-spawned-children", "after-import"],
)
def test_basic_config_at_debug_logs_botocore_without_any_secret(
    tmp_path: Path, fake_aws: FakeAws, plan: dict[str, Any], configured: str, children: list[str]
) -> None:
    log, passwords = run_program(tmp_path, fake_aws, plan, configured, children)

    assert len(passwords) == 4 * (1 + len(children))
    secrets = secrets_of(fake_aws, plan, passwords)
    assert found_in(log, secrets) == []
    assert not re.search(r"X-Amz-Signature(=|%3D)(?!\[REDACTED\])", log)
    by_process = records_by_process(log)
    assert sorted(by_process) == sorted(
        ["MainProcess", *(f"{method.capitalize()}Process" for method in children)]
    )
    for process, written in by_process.items():
        assert [line for line in BOTOCORE_LINES if line not in written] == [], process
    logging.getLogger("reliability").info(
        "DEBUG log of %d processes (logging configured %s import): %d lines, %d characters; "
        "%d secrets x 5 forms searched, %d found",
        len(by_process), configured, log.count("\n"), len(log), len(secrets),
        len(found_in(log, secrets)),
    )  # fmt: skip


async def test_a_root_handler_at_debug_gets_botocore_records_without_secrets(
    fake_aws: FakeAws, plan: dict[str, Any]
) -> None:
    """The same in this process, with a handler of the test's own on the root logger."""
    written = StringIO()
    handler = logging.StreamHandler(written)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)  # the root logger is at DEBUG for every test (tests/conftest.py)
    cache = CredentialCache()
    try:
        passwords = []
        for block, host, port in plan["mint"]:
            auth = auth_for(AwsIamConfig.from_extra(block), host=host, port=port, cache=cache)
            passwords.append((await auth.credentials()).password)
    finally:
        await cache.aclose()
        root.removeHandler(handler)
    log = written.getvalue()

    assert found_in(log, secrets_of(fake_aws, plan, passwords)) == []
    missing = [line for line in BOTOCORE_LINES if line not in log]
    assert missing == []
