"""FakeAws, the testing kit's local AWS, driven by real aiobotocore clients over HTTP.

Nothing is mocked: every call goes through botocore's serializers, signer, retry handler and
parsers to the fake on 127.0.0.1, and nothing can reach real AWS (``export_env`` is applied).
"""

from __future__ import annotations

import os
import socket
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
    )
    issued = fake.redshift_password("IAMA:etl", auto_created["DbPassword"])
    assert issued is not None
    assert (issued.user, issued.database) == ("IAMA:etl", None)  # no DbName: any database
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
