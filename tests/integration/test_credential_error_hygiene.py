"""Issue 12, finding 6 for AWS failures: a ``CredentialError`` reaches no secret.

STS and the Redshift APIs refuse or fail (a role that does not exist, a trust policy that does
not allow the caller, a wrong external id, throttling, 5xx, an outage, a slow STS, Redshift
GetClusterCredentials / Serverless GetCredentials refused) through the real aiobotocore client
against FakeAws. The error that reaches the caller is searched like an error tracker that
captures locals would read it (``tests/secrets_reach.py``: its chain, attributes and every
traceback frame's locals, three levels into the objects they hold) for the base AWS secret key
and session token, every secret FakeAws issued and the external id. The external id is in the
caller's own configuration, which the caller's frames (and iampool's public methods on the way
out, ``self._config``) hold by design; it must not be found anywhere else: not in the error's
message, attributes or chain, nor in any frame of the fetch that made the error.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any

import anyio
import pytest
from aiobotocore.session import AioSession

from iampool import AwsIamConfig, CredentialCache, CredentialError, auth_for
from iampool._aws import aws_errors
from iampool.testing import FakeAws
from tests.secrets_reach import Search, chain_cycle, search_secrets

pytestmark = pytest.mark.anyio

log = logging.getLogger("hygiene")  # the counts; --log-cli-level=INFO shows them

REGION = "us-east-1"
HOST, PORT = "app.cluster-abc.us-east-1.rds.amazonaws.com", 5432
# Frames of the fetch that made an error (service loop, AWS client, botocore); none may remain.
FETCH_FRAMES = {
    "run",
    "mint_aws_credentials",
    "assume_role",
    "aws_errors",
    "__exit__",
    "_make_api_call",
    "cluster_credentials",
    "serverless_credentials",
    "mint",
}


LOCAL_CODES = {"EndpointConnectionError", "Timeout"}  # iampool's names, not AWS's


@pytest.fixture
def aws(fake_aws: FakeAws) -> Iterator[FakeAws]:
    yield fake_aws
    fake_aws.faults.clear()


@pytest.fixture
async def cache() -> AsyncIterator[CredentialCache]:
    cache = CredentialCache(max_attempts=1, connect_timeout=0.5)  # failures are not cached
    yield cache
    await cache.aclose()


class Clock:
    """Wall clock moved ``offset`` seconds ahead (expiry without waiting for it)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def external_id() -> str:
    return f"ext-{uuid.uuid4().hex}"


def rds(role_arn: str, external: str | None, **fields: Any) -> AwsIamConfig:
    block = {"enabled": True, "region": REGION, "db_username": "app", "role_arn": role_arn}
    if external is not None:
        block["external_id"] = external
    return AwsIamConfig.from_extra({**block, **fields})


async def failure_of(getting: Awaitable[Any]) -> CredentialError:
    """The CredentialError ``getting`` raised, caught in a frame that holds nothing else."""
    try:
        await getting
    except CredentialError as exc:
        return exc
    raise AssertionError("no CredentialError")


async def rds_error(config: AwsIamConfig, cache: CredentialCache) -> CredentialError:
    auth = auth_for(config, host=HOST, port=PORT, cache=cache)
    with anyio.fail_after(10):
        return await failure_of(auth.credentials())


def base_secrets() -> list[str]:
    """The base credentials FakeAws exported (a session token too, when there is one)."""
    return [
        os.environ[name]
        for name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
        if os.environ.get(name)
    ]


class Audit:
    """Every error searched, and the totals for the log."""

    def __init__(self, aws: FakeAws) -> None:
        self.aws = aws
        self.searches: list[Search] = []

    def check(self, error: CredentialError, external: str | None, code: str) -> None:
        assert error.code == code
        if code not in LOCAL_CODES:
            assert code in str(error)  # AWS's error code stays in the message
        assert chain_cycle(error) is None
        secrets = [*base_secrets(), *self.aws.issued_secrets()]
        found = search_secrets(error, secrets)
        self.searches.append(found)
        assert found.found == [], found.found
        frames = [tb.tb_frame.f_code.co_name for tb in _tracebacks(error)]
        assert [name for name in frames if name in FETCH_FRAMES] == [], frames
        if external is not None:
            assert external not in str(error)
            assert external not in repr(error)
            saved, error.__traceback__ = error.__traceback__, None  # the caller's frames aside
            try:
                elsewhere = search_secrets(error, [external])
            finally:
                error.__traceback__ = saved
            self.searches.append(elsewhere)
            assert elsewhere.found == [], elsewhere.found

    def report(self, what: str) -> None:
        log.info(
            "%s: %d searches, %d exceptions, %d frames, %d strings, %d secrets found",
            what,
            len(self.searches),
            sum(s.exceptions for s in self.searches),
            sum(s.frames for s in self.searches),
            sum(s.texts for s in self.searches),
            sum(len(s.found) for s in self.searches),
        )


def _tracebacks(error: BaseException) -> Iterator[Any]:
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        exc = pending.pop()
        if exc is None or id(exc) in seen:
            continue
        seen.add(id(exc))
        tb = exc.__traceback__
        while tb is not None:
            yield tb
            tb = tb.tb_next
        pending += [exc.__cause__, exc.__context__]


async def test_sts_refusals_and_faults_give_errors_that_reach_no_secret(
    aws: FakeAws, cache: CredentialCache
) -> None:
    audit = Audit(aws)
    external = external_id()
    role_arn = aws.create_role(f"iampool-hyg-{uuid.uuid4().hex[:12]}", external_id=external)
    missing = role_arn.rsplit("/", 1)[0] + f"/iampool-missing-{uuid.uuid4().hex[:8]}"
    other = aws.create_role(
        f"iampool-hyg-{uuid.uuid4().hex[:12]}",
        trust_policy={
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": "arn:aws:iam::210987654321:root"},
                    "Action": "sts:AssumeRole",
                }
            ],
        },
    )

    audit.check(await rds_error(rds(missing, external), cache), external, "AccessDenied")
    audit.check(await rds_error(rds(other, external), cache), external, "AccessDenied")
    wrong = external + "-wrong"
    audit.check(await rds_error(rds(role_arn, wrong), cache), wrong, "AccessDenied")
    config = rds(role_arn, external)
    for inject, code in (
        (lambda: aws.faults.throttle("AssumeRole"), "Throttling"),
        (lambda: aws.faults.server_error("AssumeRole", status=503), "ServiceUnavailable"),
        (lambda: aws.faults.access_denied("AssumeRole"), "AccessDenied"),
    ):
        inject()
        audit.check(await rds_error(config, cache), external, code)
    with aws.outage():
        audit.check(await rds_error(config, cache), external, "EndpointConnectionError")
    aws.faults.latency("AssumeRole", 10.0)
    slow = CredentialCache(read_timeout=0.3, max_attempts=1)
    try:
        audit.check(await rds_error(config, slow), external, "Timeout")
    finally:
        aws.faults.clear()
        await slow.aclose()
    # A DSQL token is signed with the same AWS credentials: its path fails the same way.
    dsql = rds(missing, external, dsql=True, db_username="admin")
    audit.check(await rds_error(dsql, cache), external, "AccessDenied")
    audit.report("STS")
    assert len(audit.searches) == 18  # 9 errors, each also searched for the external id


async def test_redshift_refusals_give_errors_that_reach_no_secret(
    aws: FakeAws, cache: CredentialCache
) -> None:
    audit = Audit(aws)
    external = external_id()
    role_arn = aws.create_role(f"iampool-hyg-{uuid.uuid4().hex[:12]}", external_id=external)
    cluster = f"iampool-hyg-{uuid.uuid4().hex[:8]}"
    aws.create_redshift_cluster(cluster, address="127.0.0.1")
    workgroup = f"iampool-hyg-{uuid.uuid4().hex[:8]}"
    aws.create_workgroup(workgroup)
    block = {
        "enabled": True,
        "region": REGION,
        "role_arn": role_arn,
        "external_id": external,
        "db_username": "app",
        "db_name": "dev",
    }
    provisioned = AwsIamConfig.from_extra({**block, "cluster_identifier": cluster})
    serverless = AwsIamConfig.from_extra({**block, "workgroup_name": workgroup})

    async def error_of(config: AwsIamConfig) -> CredentialError:
        auth = auth_for(config, host="127.0.0.1", port=5439, cache=cache)
        with anyio.fail_after(10):
            return await failure_of(auth.credentials())

    for api, config, faults in (
        ("GetClusterCredentials", provisioned, ("access_denied", "throttle")),
        ("GetCredentials", serverless, ("access_denied", "throttle")),
    ):
        for fault in faults:
            getattr(aws.faults, fault)(api)
            error = await error_of(config)
            audit.check(error, external, str(error.code))
            assert error.code in {"AccessDenied", "AccessDeniedException", "Throttling",
                                  "ThrottlingException"}  # fmt: skip
    missing = AwsIamConfig.from_extra({**block, "cluster_identifier": "iampool-no-such"})
    audit.check(await error_of(missing), external, "ClusterNotFound")
    # Without a host the endpoint is discovered (DescribeClusters), after the login was issued.
    aws.faults.server_error("DescribeClusters")
    with anyio.fail_after(10):
        error = await failure_of(auth_for(provisioned, cache=cache).credentials())
    audit.check(error, external, "ServiceUnavailable")
    audit.report("Redshift")
    assert len(audit.searches) == 12


async def test_an_error_after_a_stale_value_expired_reaches_neither_it_nor_the_base_key(
    aws: FakeAws,
) -> None:
    """The fallback path: a refresh failed, the stale credentials expired, the caller gets the
    error; the waiting frame held the expired credentials (their secret and token)."""
    audit = Audit(aws)
    external = external_id()
    role_arn = aws.create_role(f"iampool-hyg-{uuid.uuid4().hex[:12]}", external_id=external)
    config = rds(role_arn, external)
    clock = Clock()
    cache = CredentialCache(clock=clock, connect_timeout=0.5, max_attempts=1)
    aws.expire_credentials_early(120)
    try:
        auth = auth_for(config, host=HOST, port=PORT, cache=cache)
        await auth.credentials()
        with aws.outage():
            clock.offset = 50  # a refresh is due and fails: the cached credentials are served
            await auth.credentials()
            with anyio.fail_after(10):
                while cache.stats()["refresh_failures"] < 1:  # noqa: ASYNC110
                    await anyio.sleep(0.02)
            clock.offset = 121  # past their expiry: nothing left to serve
            error = await rds_error(config, cache)
        audit.check(error, external, "EndpointConnectionError")
    finally:
        aws.expire_credentials_early(None)
        await cache.aclose()
    audit.report("stale fallback")


async def test_every_waiter_of_one_fetch_gets_the_same_clean_error(
    aws: FakeAws, cache: CredentialCache
) -> None:
    audit = Audit(aws)
    external = external_id()
    missing = f"arn:aws:iam::{aws.account_id}:role/iampool-missing-{uuid.uuid4().hex[:8]}"
    config = rds(missing, external)
    aws.faults.latency("AssumeRole", 0.3)  # the waiters all join the one fetch
    auth = auth_for(config, host=HOST, port=PORT, cache=cache)
    with anyio.fail_after(10):
        errors = await asyncio.gather(*(failure_of(auth.credentials()) for _ in range(8)))
    assert all(error is errors[0] for error in errors)
    assert sum(1 for p in aws.requests["AssumeRole"] if p.get("RoleArn") == missing) == 1
    for error in errors:
        audit.check(error, external, "AccessDenied")
    assert "not authorized" in str(errors[0])  # AWS's message is kept too
    audit.report("shared error")


async def test_a_parameter_botocore_refuses_is_named_without_its_value(aws: FakeAws) -> None:
    """botocore's ParamValidationError quotes the invalid value; the message names only the
    parameter (an ExternalId of the wrong type, refused by the real client before any call)."""
    bad = "ext-a-secret-external-id-0123456789"

    async def refused() -> None:
        async with AioSession().create_client("sts", region_name=REGION) as sts:
            with aws_errors("Unable to assume IAM role", "a role in us-east-1"):
                await sts.assume_role(
                    RoleArn=f"arn:aws:iam::{aws.account_id}:role/any",
                    RoleSessionName="s",  # too short: botocore quotes it too, harmlessly
                    ExternalId=[bad],
                )

    error = await failure_of(refused())
    assert error.code == "ParamValidationError"
    message = str(error)
    assert "parameter ExternalId" in message
    assert "parameter RoleSessionName" in message
    assert bad not in message
    assert bad not in repr(error.args)
