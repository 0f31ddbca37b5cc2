"""FakeAws, the testing kit's local AWS, driven by real aiobotocore clients over HTTP.

Nothing is mocked: every call goes through botocore's serializers, signer, retry handler and
parsers to the fake on 127.0.0.1, and nothing can reach real AWS (``export_env`` is applied).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from iampool import AwsIamConfig, CredentialCache, CredentialError, auth_for
from iampool.testing._aws import FakeAws, IssuedKey, IssuedRedshiftPassword

REGION = "us-east-1"
ACCOUNT = "123456789012"


@pytest.fixture(scope="module")
def running() -> Iterator[FakeAws]:
    with FakeAws(region=REGION) as fake:
        yield fake


@pytest.fixture
def fake(running: FakeAws) -> Iterator[FakeAws]:
    """The module's FakeAws, reset, with the environment pointing at it."""
    running.reset()
    with running.export_env():
        yield running


@asynccontextmanager
async def client(
    fake: FakeAws, service: str, key: IssuedKey | None = None, *, attempts: int = 1, **config: Any
) -> AsyncIterator[Any]:
    """An aiobotocore client for ``service`` on the fake; one attempt per call unless asked."""
    key = key or fake.base_key
    options = AioConfig(
        retries={"total_max_attempts": attempts, "mode": "standard"},
        connect_timeout=2,
        read_timeout=10,
        **config,
    )
    async with get_session().create_client(
        service,
        endpoint_url=fake.endpoint_url,
        region_name=REGION,
        aws_access_key_id=key.access_key_id,
        aws_secret_access_key=key.secret_access_key,
        aws_session_token=key.session_token,
        config=options,
    ) as made:
        yield made


def error_of(caught: pytest.ExceptionInfo[ClientError]) -> tuple[str, int, str]:
    response: Any = caught.value.response
    return (
        response["Error"]["Code"],
        response["ResponseMetadata"]["HTTPStatusCode"],
        response["Error"]["Message"],
    )


async def assume(fake: FakeAws, role_arn: str, **params: Any) -> dict[str, Any]:
    async with client(fake, "sts") as sts:
        response: dict[str, Any] = await sts.assume_role(
            RoleArn=role_arn, RoleSessionName="iampool", **params
        )
    return response


def as_key(credentials: dict[str, Any]) -> IssuedKey:
    return IssuedKey(
        credentials["AccessKeyId"],
        credentials["SecretAccessKey"],
        credentials["SessionToken"],
        credentials["Expiration"],
    )


# -- STS ---------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_assume_role_is_counted_and_its_parameters_recorded(fake: FakeAws) -> None:
    role_arn = fake.create_role("app-role")

    await assume(fake, role_arn, ExternalId="ext-1", DurationSeconds=1800)

    assert fake.calls == {"AssumeRole": 1}  # set-up calls (CreateRole) are not counted
    (params,) = fake.requests["AssumeRole"]
    assert params["RoleArn"] == role_arn == f"arn:aws:iam::{ACCOUNT}:role/app-role"
    assert params["RoleSessionName"] == "iampool"
    assert params["ExternalId"] == "ext-1"
    assert params["DurationSeconds"] == "1800"


@pytest.mark.anyio
async def test_signing_key_knows_assumed_role_keys_and_the_base_key_only(fake: FakeAws) -> None:
    role_arn = fake.create_role("app-role")
    credentials = (await assume(fake, role_arn))["Credentials"]

    issued = fake.signing_key(credentials["AccessKeyId"])

    assert issued == as_key(credentials)
    assert issued is not None
    assert issued.expires_at is not None
    assert issued.expires_at.utcoffset() == timedelta(0)
    assert fake.signing_key(fake.base_key.access_key_id) == fake.base_key
    assert fake.base_key.session_token is None
    assert fake.base_key.expires_at is None
    assert fake.signing_key("AKIAUNKNOWNKEY000000") is None
    async with client(fake, "sts", issued) as sts:
        identity = await sts.get_caller_identity()
    assert identity["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/app-role/iampool"


@pytest.mark.anyio
async def test_base_key_belongs_to_iam_user_test(fake: FakeAws) -> None:
    async with client(fake, "sts") as sts:
        identity = await sts.get_caller_identity()

    assert identity["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/test"
    assert identity["Account"] == ACCOUNT


@pytest.mark.anyio
async def test_require_external_id_denies_missing_or_wrong_and_allows_right(
    fake: FakeAws,
) -> None:
    role_arn = fake.create_role("partner-role", external_id="right-id")
    denied = (
        f"User: arn:aws:iam::{ACCOUNT}:user/test is not authorized to perform: "
        f"sts:AssumeRole on resource: {role_arn}"
    )

    for given in ({}, {"ExternalId": "wrong-id"}):
        with pytest.raises(ClientError) as caught:
            await assume(fake, role_arn, **given)
        assert error_of(caught) == ("AccessDenied", 403, denied)  # like STS: no reason given
    response = await assume(fake, role_arn, ExternalId="right-id")

    assert fake.signing_key(response["Credentials"]["AccessKeyId"]) is not None
    fake.require_external_id(role_arn, None)
    await assume(fake, role_arn)
    assert fake.calls["AssumeRole"] == 4


def denial(
    role_arn: str, caller: str = f"arn:aws:iam::{ACCOUNT}:user/test"
) -> tuple[str, int, str]:
    """STS's answer to an AssumeRole it refuses: the same whether or not the role exists."""
    message = f"User: {caller} is not authorized to perform: sts:AssumeRole on resource: {role_arn}"
    return ("AccessDenied", 403, message)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "role_arn",
    [
        f"arn:aws:iam::{ACCOUNT}:role/app-rol",  # a typo
        f"arn:aws:iam::{ACCOUNT}:role/team/app-role",  # a path the role does not have
        "arn:aws:iam::210987654321:role/app-role",  # another account
        f"arn:aws:iam::{ACCOUNT}:role/never-created",
    ],
)
async def test_assume_role_on_a_role_that_does_not_exist_is_access_denied_like_sts(
    fake: FakeAws, role_arn: str
) -> None:
    fake.create_role("app-role")

    with pytest.raises(ClientError) as caught:
        await assume(fake, role_arn)

    assert error_of(caught) == denial(role_arn)
    assert fake.calls["AssumeRole"] == 1
    assert len(fake.issued_secrets()) == 1  # the base key's secret only: nothing was issued


@pytest.mark.anyio
async def test_a_mistyped_role_arn_fails_iampool_with_access_denied_naming_the_role(
    fake: FakeAws,
) -> None:
    fake.create_role("app-db")
    mistyped = f"arn:aws:iam::{ACCOUNT}:role/app_db"
    config = AwsIamConfig.from_extra(
        {"enabled": True, "region": REGION, "role_arn": mistyped, "db_username": "app"}
    )
    cache = CredentialCache()

    with pytest.raises(CredentialError) as caught:
        await auth_for(config, host="127.0.0.1", port=5432, cache=cache).credentials()

    assert caught.value.code == "AccessDenied"
    assert str(caught.value).startswith(f"Unable to assume IAM role {mistyped} in {REGION}")


@pytest.mark.anyio
async def test_a_trust_policy_naming_one_user_lets_that_user_in_and_keeps_others_out(
    fake: FakeAws,
) -> None:
    async with client(fake, "iam") as iam:
        await iam.create_user(UserName="deployer")
        created = (await iam.create_access_key(UserName="deployer"))["AccessKey"]
    deployer = fake.signing_key(created["AccessKeyId"])
    assert deployer is not None
    role_arn = fake.create_role(
        "deploy-role",
        trust_policy={
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/deployer"},
                    "Action": "sts:AssumeRole",
                }
            ],
        },
    )

    with pytest.raises(ClientError) as caught:
        await assume(fake, role_arn)  # as user "test", the base key
    async with client(fake, "sts", deployer) as sts:
        response = await sts.assume_role(RoleArn=role_arn, RoleSessionName="deploy")

    assert error_of(caught) == denial(role_arn)
    assert response["AssumedRoleUser"]["Arn"] == (
        f"arn:aws:sts::{ACCOUNT}:assumed-role/deploy-role/deploy"
    )


@pytest.mark.anyio
async def test_a_trust_policy_naming_a_role_admits_its_sessions_for_role_chaining(
    fake: FakeAws,
) -> None:
    hub_arn = fake.create_role("hub")
    hub_session = as_key((await assume(fake, hub_arn))["Credentials"])
    spoke_arn = fake.create_role(
        "spoke",
        trust_policy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": {
                    "Effect": "Allow",
                    "Principal": {"AWS": [hub_arn]},
                    "Action": ["sts:AssumeRole", "sts:TagSession"],
                },
            }
        ),
    )

    with pytest.raises(ClientError) as caught:
        await assume(fake, spoke_arn)
    async with client(fake, "sts", hub_session) as sts:
        await sts.assume_role(RoleArn=spoke_arn, RoleSessionName="chained")

    assert error_of(caught) == denial(spoke_arn)


@pytest.mark.anyio
async def test_a_deny_statement_in_the_trust_policy_wins_over_an_allow(fake: FakeAws) -> None:
    role_arn = fake.create_role(
        "guarded",
        trust_policy={
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"AWS": ACCOUNT}, "Action": "sts:AssumeRole"},
                {
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "sts:*",
                    "Condition": {"StringLike": {"aws:PrincipalArn": "*:user/te?t"}},
                },
            ],
        },
    )

    with pytest.raises(ClientError) as caught:
        await assume(fake, role_arn)

    assert error_of(caught) == denial(role_arn)


@pytest.mark.anyio
async def test_a_trust_policy_condition_on_the_external_id_is_judged(fake: FakeAws) -> None:
    role_arn = fake.create_role(
        "vendor",
        trust_policy={
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                    "Action": "sts:AssumeRole",
                    "Condition": {"StringEquals": {"sts:ExternalId": ["id-1", "id-2"]}},
                }
            ],
        },
    )

    for given in ({}, {"ExternalId": "id-3"}):
        with pytest.raises(ClientError) as caught:
            await assume(fake, role_arn, **given)
        assert error_of(caught) == denial(role_arn)
    await assume(fake, role_arn, ExternalId="id-2")


@pytest.mark.parametrize(
    ("policy", "named"),
    [
        ({"Statement": [{"Effect": "Allow", "NotPrincipal": {"AWS": "*"}}]}, "NotPrincipal"),
        (
            {
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"AWS": "*"},
                        "Action": "sts:AssumeRole",
                        "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}},
                    }
                ]
            },
            "IpAddress",
        ),
        ("not json", "not valid JSON"),
    ],
)
def test_a_trust_policy_the_fake_cannot_judge_is_refused_when_the_role_is_created(
    fake: FakeAws, policy: object, named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        fake.create_role("unjudgeable", trust_policy=policy)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_assume_role_longer_than_the_roles_max_session_duration_is_a_validation_error(
    fake: FakeAws,
) -> None:
    default = fake.create_role("one-hour")
    long = fake.create_role("twelve-hours", max_session_duration=43200)

    with pytest.raises(ClientError) as caught:
        await assume(fake, default, DurationSeconds=3601)
    await assume(fake, long, DurationSeconds=43200)

    assert error_of(caught) == (
        "ValidationError",
        400,
        "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.",
    )


def test_require_external_id_on_a_role_that_does_not_exist_says_to_create_it(
    fake: FakeAws,
) -> None:
    missing = f"arn:aws:iam::{ACCOUNT}:role/missing"

    with pytest.raises(LookupError, match="create_role"):
        fake.require_external_id(missing, "ext")


@pytest.mark.anyio
async def test_resetting_one_fake_keeps_the_roles_and_clusters_another_running_one_created(
    fake: FakeAws, fake_aws: FakeAws
) -> None:
    survivor = fake_aws.create_role("survivor-role")
    fake_aws.create_redshift_cluster("survivor-cluster")
    mine = fake.create_role("my-role")

    fake.reset()

    async with client(fake_aws, "sts") as sts:
        await sts.assume_role(RoleArn=survivor, RoleSessionName="after-reset")
    async with client(fake_aws, "redshift") as redshift:
        await redshift.describe_clusters(ClusterIdentifier="survivor-cluster")
    with pytest.raises(ClientError) as caught:
        await assume(fake, mine)
    assert error_of(caught) == denial(mine)  # this fake's own role is gone


@pytest.mark.anyio
async def test_assume_role_duration_outside_900_to_43200_is_a_validation_error(
    fake: FakeAws,
) -> None:
    role_arn = fake.create_role("app-role")

    async with client(fake, "sts", parameter_validation=False) as sts:
        for seconds, bound in ((899, "greater than or equal to 900"), (43201, "less than")):
            with pytest.raises(ClientError) as caught:
                await sts.assume_role(
                    RoleArn=role_arn, RoleSessionName="iampool", DurationSeconds=seconds
                )
            code, status, message = error_of(caught)
            assert (code, status) == ("ValidationError", 400)
            assert bound in message


@pytest.mark.anyio
async def test_expire_credentials_early_shortens_the_response_and_the_lookup_alike(
    fake: FakeAws,
) -> None:
    role_arn = fake.create_role("app-role")
    fake.expire_credentials_early(5)

    before = datetime.now(timezone.utc)
    credentials = (await assume(fake, role_arn, DurationSeconds=3600))["Credentials"]
    after = datetime.now(timezone.utc)

    expiration = credentials["Expiration"]
    assert before + timedelta(seconds=5) <= expiration <= after + timedelta(seconds=5)
    issued = fake.signing_key(credentials["AccessKeyId"])
    assert issued is not None
    assert issued.expires_at == expiration
    assert fake.requests["AssumeRole"][0]["DurationSeconds"] == "3600"  # as the client sent it

    fake.expire_credentials_early(None)
    credentials = (await assume(fake, role_arn, DurationSeconds=3600))["Credentials"]
    assert credentials["Expiration"] >= after + timedelta(seconds=3590)


# -- faults ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_throttle_fails_exactly_n_calls_then_recovers(fake: FakeAws) -> None:
    role_arn = fake.create_role("app-role")
    fake.faults.throttle("AssumeRole", times=2)

    for _ in range(2):
        with pytest.raises(ClientError) as caught:
            await assume(fake, role_arn)
        assert error_of(caught) == ("Throttling", 400, "Rate exceeded")
    await assume(fake, role_arn)

    assert fake.calls["AssumeRole"] == 3
    assert fake.faults.pending("AssumeRole") == 0


@pytest.mark.anyio
async def test_botocore_retries_an_injected_throttle_like_a_real_one(fake: FakeAws) -> None:
    fake.faults.throttle("GetCallerIdentity", times=1)

    async with client(fake, "sts", attempts=2) as sts:
        response = await sts.get_caller_identity()

    assert response["ResponseMetadata"]["RetryAttempts"] == 1
    assert fake.calls["GetCallerIdentity"] == 2


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "code"), [(503, "ServiceUnavailable"), (500, "InternalFailure")]
)
async def test_server_error_is_a_5xx_that_botocore_parses(
    fake: FakeAws, status: int, code: str
) -> None:
    fake.faults.server_error("GetCallerIdentity", times=1, status=status)

    async with client(fake, "sts") as sts:
        with pytest.raises(ClientError) as caught:
            await sts.get_caller_identity()
        await sts.get_caller_identity()

    assert error_of(caught)[:2] == (code, status)
    assert caught.value.response["Error"]["Type"] == "Receiver"


@pytest.mark.anyio
async def test_access_denied_fault_names_the_caller_and_the_action(fake: FakeAws) -> None:
    fake.create_redshift_cluster("analytics")
    fake.faults.access_denied("GetClusterCredentials")

    async with client(fake, "redshift") as redshift:
        with pytest.raises(ClientError) as caught:
            await redshift.get_cluster_credentials(ClusterIdentifier="analytics", DbUser="app")

    assert error_of(caught) == (
        "AccessDenied",
        403,
        f"User: arn:aws:iam::{ACCOUNT}:user/test is not authorized to perform: "
        "redshift:GetClusterCredentials",
    )


@pytest.mark.anyio
async def test_faults_are_served_in_order_and_star_matches_every_api(fake: FakeAws) -> None:
    fake.faults.throttle("GetCallerIdentity")
    fake.faults.server_error("GetCallerIdentity")
    fake.faults.access_denied("*")
    codes = []

    async with client(fake, "sts") as sts:
        for _ in range(3):
            with pytest.raises(ClientError) as caught:
                await sts.get_caller_identity()
            codes.append(error_of(caught)[0])
        await sts.get_caller_identity()

    assert codes == ["Throttling", "ServiceUnavailable", "AccessDenied"]
    assert fake.calls["GetCallerIdentity"] == 4


def test_wait_for_calls_times_out_with_the_count_it_saw(fake: FakeAws) -> None:
    with pytest.raises(TimeoutError, match="received 0 AssumeRole calls"):
        fake.wait_for_calls("AssumeRole", timeout=0.01)


def test_fault_arguments_are_checked(fake: FakeAws) -> None:
    with pytest.raises(ValueError, match="times"):
        fake.faults.throttle("AssumeRole", times=0)
    with pytest.raises(ValueError, match="5xx"):
        fake.faults.server_error("AssumeRole", status=404)
    with pytest.raises(ValueError, match="negative"):
        fake.faults.latency("AssumeRole", -1)


@pytest.mark.anyio
async def test_latency_delays_the_answer(fake: FakeAws) -> None:
    fake.faults.latency("GetCallerIdentity", 0.2)

    async with client(fake, "sts") as sts:
        started = time.monotonic()
        await sts.get_caller_identity()
        elapsed = time.monotonic() - started

    assert elapsed >= 0.2


@pytest.mark.anyio
async def test_a_call_held_by_latency_is_counted_at_once_and_answered_on_clear(
    fake: FakeAws,
) -> None:
    fake.faults.latency("GetCallerIdentity", 30)
    answered = anyio.Event()

    async with client(fake, "sts") as sts:

        async def call() -> None:
            await sts.get_caller_identity()
            answered.set()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(call)
            await anyio.to_thread.run_sync(fake.wait_for_calls, "GetCallerIdentity")
            assert not answered.is_set()
            fake.faults.clear()
            with anyio.fail_after(5):
                await answered.wait()


@pytest.mark.anyio
async def test_outage_refuses_connections_then_recovers_on_the_same_port(fake: FakeAws) -> None:
    endpoint = fake.endpoint_url

    async with client(fake, "sts") as sts:
        with fake.outage():
            with pytest.raises(EndpointConnectionError):
                await sts.get_caller_identity()
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((fake.host, fake.port), timeout=2)
        response = await sts.get_caller_identity()

    assert fake.endpoint_url == endpoint
    assert response["Arn"].endswith(":user/test")
    assert fake.calls["GetCallerIdentity"] == 1  # refused calls never arrived


@pytest.mark.anyio
async def test_an_outage_cuts_calls_in_flight(fake: FakeAws) -> None:
    fake.faults.latency("GetCallerIdentity", 30)
    failures: list[BaseException] = []

    async with client(fake, "sts") as sts:

        async def call() -> None:
            try:
                await sts.get_caller_identity()
            except BotoCoreError as exc:
                failures.append(exc)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(call)
                await anyio.to_thread.run_sync(fake.wait_for_calls, "GetCallerIdentity")
                await anyio.to_thread.run_sync(fake.start_outage)
        fake.end_outage()

    assert len(failures) == 1


# -- Redshift provisioned (moto) ---------------------------------------------------------------


@pytest.mark.anyio
async def test_redshift_cluster_credentials_are_counted_and_the_password_is_found(
    fake: FakeAws,
) -> None:
    endpoint = fake.create_redshift_cluster(
        "analytics", db_name="warehouse", port=15439, address="127.0.0.1"
    )

    async with client(fake, "redshift") as redshift:
        described = await redshift.describe_clusters(ClusterIdentifier="analytics")
        credentials = await redshift.get_cluster_credentials(
            ClusterIdentifier="analytics", DbUser="app", DbName="warehouse", DurationSeconds=900
        )
        auto_created = await redshift.get_cluster_credentials(
            ClusterIdentifier="analytics", DbUser="etl", AutoCreate=True
        )

    assert endpoint == ("127.0.0.1", 15439)
    assert described["Clusters"][0]["Endpoint"] == {"Address": "127.0.0.1", "Port": 15439}
    assert described["Clusters"][0]["DBName"] == "warehouse"
    assert fake.calls["DescribeClusters"] == 1
    assert fake.calls["GetClusterCredentials"] == 2
    assert credentials["DbUser"] == "IAM:app"
    assert fake.redshift_password("IAM:app", credentials["DbPassword"]) == IssuedRedshiftPassword(
        user="IAM:app",
        password=credentials["DbPassword"],
        expires_at=credentials["Expiration"],
        database="warehouse",
        cluster_identifier="analytics",
        workgroup_name=None,
        auto_create=False,
    )
    issued = fake.redshift_password("IAMA:etl", auto_created["DbPassword"])
    assert issued is not None
    assert (issued.user, issued.database) == ("IAMA:etl", None)  # no DbName: any database
    assert issued.auto_create is True  # the first login creates the user
    assert fake.redshift_password("IAM:app", "never-issued") is None


@pytest.mark.anyio
async def test_a_cluster_without_an_address_keeps_the_name_moto_invents(fake: FakeAws) -> None:
    address, port = fake.create_redshift_cluster("plain")

    async with client(fake, "redshift") as redshift:
        described = await redshift.describe_clusters(ClusterIdentifier="plain")

    assert described["Clusters"][0]["Endpoint"] == {"Address": address, "Port": port}
    assert address.startswith("plain.")
    assert address.endswith(f".{REGION}.redshift.amazonaws.com")


# -- Redshift Serverless (the kit's own) -------------------------------------------------------


@pytest.mark.anyio
async def test_serverless_get_workgroup_parses_with_botocore(fake: FakeAws) -> None:
    fake.create_workgroup("analytics-wg", namespace="sales", address="127.0.0.1", port=15440)

    async with client(fake, "redshift-serverless") as serverless:
        workgroup = (await serverless.get_workgroup(workgroupName="analytics-wg"))["workgroup"]

    assert workgroup["workgroupName"] == "analytics-wg"
    assert workgroup["namespaceName"] == "sales"
    assert workgroup["status"] == "AVAILABLE"
    assert workgroup["endpoint"]["address"] == "127.0.0.1"
    assert workgroup["endpoint"]["port"] == 15440
    assert workgroup["workgroupArn"] == (
        f"arn:aws:redshift-serverless:{REGION}:{ACCOUNT}:workgroup/{workgroup['workgroupId']}"
    )
    assert isinstance(workgroup["workgroupId"], str)
    assert isinstance(workgroup["baseCapacity"], int)
    assert workgroup["publiclyAccessible"] is False
    assert isinstance(workgroup["creationDate"], datetime)
    assert fake.calls["GetWorkgroup"] == 1
    assert fake.requests["GetWorkgroup"] == [{"workgroupName": "analytics-wg"}]


@pytest.mark.anyio
async def test_serverless_credentials_for_an_assumed_role_are_iamr_and_found(
    fake: FakeAws,
) -> None:
    fake.create_workgroup("analytics-wg")
    role_key = as_key((await assume(fake, fake.create_role("etl-role")))["Credentials"])

    before = datetime.now(timezone.utc)
    async with client(fake, "redshift-serverless", role_key) as serverless:
        credentials = await serverless.get_credentials(
            workgroupName="analytics-wg", dbName="sales", durationSeconds=1800
        )

    assert credentials["dbUser"] == "IAMR:etl-role"
    assert isinstance(credentials["dbPassword"], str)
    assert isinstance(credentials["expiration"], datetime)
    assert isinstance(credentials["nextRefreshTime"], datetime)
    assert credentials["expiration"] >= before + timedelta(seconds=1799)
    issued = fake.redshift_password("IAMR:etl-role", credentials["dbPassword"])
    assert issued is not None
    assert (issued.user, issued.database, issued.workgroup_name, issued.cluster_identifier) == (
        "IAMR:etl-role",
        "sales",
        "analytics-wg",
        None,
    )
    assert abs(issued.expires_at - credentials["expiration"]) < timedelta(milliseconds=1)
    assert issued.auto_create is True  # Serverless creates the database user at login


@pytest.mark.anyio
async def test_serverless_credentials_for_the_base_user_default_to_the_workgroup_database(
    fake: FakeAws,
) -> None:
    fake.create_workgroup("analytics-wg", db_name="dev")

    async with client(fake, "redshift-serverless") as serverless:
        credentials = await serverless.get_credentials(workgroupName="analytics-wg")

    assert credentials["dbUser"] == "IAM:test"
    issued = fake.redshift_password("IAM:test", credentials["dbPassword"])
    assert issued is not None
    assert issued.database == "dev"
    assert (
        timedelta(seconds=890)
        < issued.expires_at - datetime.now(timezone.utc)
        <= timedelta(seconds=900)
    )


@pytest.mark.anyio
async def test_serverless_unknown_workgroup_is_resource_not_found(fake: FakeAws) -> None:
    async with client(fake, "redshift-serverless") as serverless:
        for call in (serverless.get_workgroup, serverless.get_credentials):
            with pytest.raises(ClientError) as caught:
                await call(workgroupName="missing-wg")
            assert error_of(caught)[:2] == ("ResourceNotFoundException", 400)


@pytest.mark.anyio
@pytest.mark.parametrize("seconds", [100, 899, 3601])
async def test_serverless_duration_outside_900_to_3600_is_a_validation_exception(
    fake: FakeAws, seconds: int
) -> None:
    fake.create_workgroup("analytics-wg")

    async with client(fake, "redshift-serverless") as serverless:
        with pytest.raises(ClientError) as caught:
            await serverless.get_credentials(workgroupName="analytics-wg", durationSeconds=seconds)

    assert error_of(caught)[:2] == ("ValidationException", 400)


@pytest.mark.anyio
async def test_serverless_faults_use_json_error_codes(fake: FakeAws) -> None:
    fake.create_workgroup("analytics-wg")
    fake.faults.throttle("GetCredentials")
    fake.faults.access_denied("GetCredentials")

    async with client(fake, "redshift-serverless") as serverless:
        codes = []
        for _ in range(2):
            with pytest.raises(ClientError) as caught:
                await serverless.get_credentials(workgroupName="analytics-wg")
            codes.append(error_of(caught)[0])
        await serverless.get_credentials(workgroupName="analytics-wg")

    assert codes == ["ThrottlingException", "AccessDeniedException"]


# -- environment, state, lifecycle -------------------------------------------------------------


def test_export_env_replaces_every_aws_variable_and_restores_them(
    fake: FakeAws, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_PROFILE", "production")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "a-real-session-token")
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", "https://sts.amazonaws.com")
    monkeypatch.setenv("IAMPOOL_UNRELATED", "kept")
    before = dict(os.environ)

    with fake.export_env() as exported:
        inside = {name: value for name, value in os.environ.items() if name.startswith("AWS_")}
        os.environ["AWS_REGION"] = "eu-west-1"  # set inside the block: gone afterwards

    assert inside == exported == fake.env()
    assert exported["AWS_ENDPOINT_URL"] == fake.endpoint_url
    assert exported["AWS_EC2_METADATA_DISABLED"] == "true"
    assert dict(os.environ) == before


@pytest.mark.anyio
async def test_an_sdk_configured_only_by_export_env_reaches_the_fake(fake: FakeAws) -> None:
    async with get_session().create_client("sts") as sts:
        identity = await sts.get_caller_identity()

    assert identity["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/test"
    assert fake.calls["GetCallerIdentity"] == 1


@pytest.mark.anyio
async def test_reset_clears_counters_faults_secrets_and_moto_state(fake: FakeAws) -> None:
    fake.create_redshift_cluster("analytics")
    role_key = as_key((await assume(fake, fake.create_role("app-role")))["Credentials"])
    fake.faults.throttle("DescribeClusters", times=5)

    fake.reset()

    assert fake.calls == {}
    assert fake.requests == {}
    assert fake.faults.pending("DescribeClusters") == 0
    assert fake.signing_key(role_key.access_key_id) is None
    async with client(fake, "redshift") as redshift:
        with pytest.raises(ClientError) as caught:
            await redshift.describe_clusters(ClusterIdentifier="analytics")
    assert error_of(caught)[0] == "ClusterNotFound"
    fake.create_redshift_cluster("analytics")  # the identifier is free again


def test_secrets_appear_in_no_repr(fake: FakeAws) -> None:
    key = IssuedKey("ASIAEXAMPLEKEY000001", "secret-access-key", "session-token", None)
    password = IssuedRedshiftPassword(
        "IAM:app", "temporary-password", datetime.now(timezone.utc), None, "c", None
    )

    shown = repr(key) + repr(password) + repr(fake) + repr(fake.base_key)

    for secret in (
        "secret-access-key",
        "session-token",
        "temporary-password",
        fake.base_key.secret_access_key,
    ):
        assert secret not in shown
    assert "ASIAEXAMPLEKEY000001" in shown


@pytest.mark.anyio
async def test_async_context_manager_serves_then_releases_its_port(fake: FakeAws) -> None:
    async with FakeAws(region="eu-west-1") as other:
        assert other.endpoint_url != fake.endpoint_url
        assert other.base_key != fake.base_key
        async with get_session().create_client(
            "sts",
            endpoint_url=other.endpoint_url,
            region_name="eu-west-1",
            aws_access_key_id=other.base_key.access_key_id,
            aws_secret_access_key=other.base_key.secret_access_key,
        ) as sts:
            await sts.get_caller_identity()
        assert other.calls["GetCallerIdentity"] == 1
        assert fake.calls["GetCallerIdentity"] == 0

    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((other.host, other.port), timeout=2)
    with pytest.raises(RuntimeError, match="not started"):
        other.endpoint_url  # noqa: B018


# -- the wire: strict HTTP clients ---------------------------------------------------------------


def raw_headers(fake: FakeAws, request: bytes) -> list[str]:
    """The header names of the fake's answer to a raw HTTP request, as sent (lower-cased)."""
    with socket.create_connection((fake.host, fake.port), timeout=5) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
    return [line.split(":", 1)[0].strip().lower() for line in head]


@pytest.mark.parametrize(
    "form",
    [
        "Action=GetCallerIdentity&Version=2011-06-15",  # answered by the fake itself
        "Action=DescribeClusters&Version=2012-12-01",  # answered by moto
    ],
)
def test_every_answer_carries_each_singleton_header_once(fake: FakeAws, form: str) -> None:
    service = "sts" if "Caller" in form else "redshift"
    scope = f"{fake.base_key.access_key_id}/20260101/{REGION}/{service}/aws4_request"
    body = form.encode()
    request = (
        f"POST / HTTP/1.1\r\nHost: {fake.host}:{fake.port}\r\n"
        "Content-Type: application/x-www-form-urlencoded; charset=utf-8\r\n"
        f"Authorization: AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=host, Signature=0\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body

    names = raw_headers(fake, request)

    for singleton in ("server", "content-type", "content-length", "date"):
        assert names.count(singleton) == 1, (singleton, names)


DEV_MODE_CLIENT = """
import asyncio
from aiobotocore.session import get_session
from iampool.testing import FakeAws

async def main():
    async with FakeAws() as aws:
        with aws.export_env():
            role_arn = aws.create_role("dev-mode")
            async with get_session().create_client("sts") as sts:
                await sts.get_caller_identity()
                await sts.assume_role(RoleArn=role_arn, RoleSessionName="dev-mode")
            async with get_session().create_client("redshift") as redshift:
                await redshift.describe_clusters()
    print("every call answered")

asyncio.run(main())
"""


@pytest.mark.parametrize(
    ("flags", "variables"),
    [(["-X", "dev"], {}), ([], {"PYTHONASYNCIODEBUG": "1"})],
    ids=["python -X dev", "PYTHONASYNCIODEBUG=1"],
)
def test_aiobotocore_in_asyncio_debug_mode_parses_every_answer(
    flags: list[str], variables: dict[str, str]
) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    env.update(variables)
    result = subprocess.run(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, *flags, "-W", "ignore::DeprecationWarning", "-c", DEV_MODE_CLIENT],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert "Duplicate" not in result.stderr
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "every call answered"
