"""IamGateway in Redshift mode in front of the real PostgreSQL 15, driven by redshift-connector.

redshift-connector takes no CA file: it trusts the default store (``SSL_CERT_FILE``) plus
Amazon's bundle, and with ``sslmode="verify-full"`` checks the host name.
"""

from __future__ import annotations

import gc
import os
import struct
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import anyio
import asyncpg
import botocore.session
import pytest
import redshift_connector

import iampool
from iampool.testing import FakeAws, IamDatabase, IamGateway
from tests.users import APP, IAM_APP, OTHER

pytestmark = pytest.mark.anyio

UPSTREAM = os.environ.get("IAMPOOL_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
LOGIN = IAM_APP
CLUSTER = "gateway-test"
BOTOCORE = botocore.session.get_session()


Issue = Callable[..., tuple[str, str]]


@pytest.fixture(scope="module")
def issue(fake_aws: FakeAws) -> Issue:
    """GetClusterCredentials on the fake AWS: (DbUser, DbPassword) for a user and database."""
    fake_aws.create_redshift_cluster(CLUSTER, db_name="postgres")
    redshift = botocore.session.get_session().create_client(
        "redshift",
        region_name=fake_aws.region,
        endpoint_url=fake_aws.endpoint_url,
        aws_access_key_id=fake_aws.base_key.access_key_id,
        aws_secret_access_key=fake_aws.base_key.secret_access_key,
    )

    def issue(
        user: str = APP, database: str = "postgres", *, auto_create: bool = False
    ) -> tuple[str, str]:
        answer = redshift.get_cluster_credentials(
            DbUser=user,
            ClusterIdentifier=CLUSTER,
            DbName=database,
            DurationSeconds=900,
            AutoCreate=auto_create,
        )
        return answer["DbUser"], answer["DbPassword"]

    return issue


@pytest.fixture(scope="module")
def password(issue: Issue) -> str:
    user, password = issue()
    assert user == LOGIN
    return password


@pytest.fixture(scope="module")
def gateway(fake_aws: FakeAws) -> Iterator[IamGateway]:
    with IamGateway(
        "postgresql", upstream=UPSTREAM, authority=fake_aws, mode="redshift"
    ) as gateway:
        gateway.ensure_user(LOGIN)
        yield gateway
        gateway.drop_created_users()


@pytest.fixture(autouse=True)
def trust_the_gateway(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fresh counters, and redshift-connector trusting this module's gateway (its only CA input)."""
    if "gateway" in request.fixturenames:
        gateway: IamGateway = request.getfixturevalue("gateway")
        gateway.reset_counters()
        monkeypatch.setenv("SSL_CERT_FILE", str(gateway.ca_path))


def connect(gateway: IamGateway, password: str, **kwargs: object) -> redshift_connector.Connection:
    options: dict[str, object] = {
        "host": gateway.host,
        "port": gateway.port,
        "user": LOGIN,
        "database": "postgres",
        "sslmode": "verify-full",
    }
    options.update(kwargs)
    return redshift_connector.connect(password=password, **options)


@contextmanager
def collecting_leaked_sockets() -> Iterator[None]:
    """redshift-connector does not close its socket when the server refuses TLS or the login:
    collect the leaked socket here, where that is expected, rather than in a later test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            yield
        finally:
            gc.collect()


def refused(gateway: IamGateway, password: str, **kwargs: object) -> dict[str, str]:
    """Attempt a login that must fail; the server's error fields."""
    with collecting_leaked_sockets():
        return login_error(gateway, password, **kwargs)


def login_error(gateway: IamGateway, password: str, **kwargs: object) -> dict[str, str]:
    # A function of its own: the traceback holding the leaked socket dies with this frame.
    # InterfaceError for a refused login; ProgrammingError for SQLSTATE class 42 (no such user)
    with pytest.raises(
        (redshift_connector.InterfaceError, redshift_connector.ProgrammingError)
    ) as error:
        connect(gateway, password, **kwargs)
    return dict(error.value.args[0])


def test_an_issued_password_logs_in_to_the_real_server_as_the_iam_user(
    gateway: IamGateway, password: str
) -> None:
    with connect(gateway, password) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT current_user, 1")
        assert cursor.fetchall() == ([IAM_APP, 1],)
        cursor.execute("SELECT %s::int + 1", (41,))
        assert cursor.fetchall() == ([42],)

    assert gateway.accepted == 1
    assert gateway.rejected == {}


def test_the_gateway_reports_redshifts_server_version(gateway: IamGateway, password: str) -> None:
    with connect(gateway, password) as conn:
        statuses = dict(conn.parameter_statuses)

    assert statuses[b"server_version"] == b"8.0.2"


def test_startup_parameters_only_redshift_knows_are_dropped_and_the_rest_kept(
    gateway: IamGateway, password: str
) -> None:
    with (
        connect(gateway, password, application_name="billing-report") as conn,
        conn.cursor() as cursor,
    ):
        cursor.execute("SELECT current_setting('application_name')")
        assert cursor.fetchall() == (["billing-report"],)


def test_a_password_that_was_never_issued_is_refused(gateway: IamGateway) -> None:
    error = refused(gateway, "AskR3dsh1ftGuessed")

    assert error["C"] == "28000"
    assert error["M"] == f'PAM authentication failed for user "{IAM_APP}"'
    assert gateway.rejected == {"bad_password": 1}


def test_a_password_issued_to_another_user_is_refused(gateway: IamGateway, issue: Issue) -> None:
    other, others_password = issue(OTHER)
    gateway.ensure_user(other)

    error = refused(gateway, others_password)  # presented by IAM:app

    assert error["M"] == f'PAM authentication failed for user "{IAM_APP}"'
    assert gateway.rejected == {"wrong_user": 1}
    with connect(gateway, others_password, user=other) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT current_user")
        assert cursor.fetchall() == ([f"IAM:{OTHER}"],)


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def role_exists(name: str) -> bool:
    async def query() -> bool:
        conn = await asyncpg.connect(UPSTREAM)
        try:
            return bool(await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name))
        finally:
            await conn.close()

    return anyio.run(query)


def current_user(gateway: IamGateway, password: str, user: str) -> str:
    with connect(gateway, password, user=user) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT current_user")
        [[name]] = cursor.fetchall()
    return str(name)


def test_a_cluster_password_for_a_user_that_does_not_exist_is_refused_as_redshift_does(
    gateway: IamGateway, issue: Issue
) -> None:
    user, password = issue(unique("nobody"))  # AutoCreate=False: the user must exist already

    error = refused(gateway, password, user=user)

    assert (error["C"], error["M"]) == ("42704", f'user "{user}" does not exist')
    assert gateway.rejected == {"no_such_user": 1}
    assert gateway.accepted == 0
    assert not role_exists(user)


def test_with_auto_create_the_first_login_creates_the_cluster_user(
    gateway: IamGateway, issue: Issue
) -> None:
    name = unique("newcomer")
    user, password = issue(name, auto_create=True)
    assert user == f"IAMA:{name}"  # the DbUser GetClusterCredentials returns with AutoCreate
    assert not role_exists(user)

    assert current_user(gateway, password, user) == user
    assert current_user(gateway, password, user) == user  # the second login finds it

    assert gateway.accepted == 2
    assert gateway.rejected == {}
    assert user in gateway.created_users  # dropped with the module's gateway


def serverless_login(
    fake_aws: FakeAws, gateway: IamGateway, key: dict[str, str]
) -> tuple[str, str]:
    """GetCredentials on a workgroup served by ``gateway``, signed with ``key``."""
    workgroup = unique("wg")
    fake_aws.create_workgroup(
        workgroup, db_name="postgres", address=gateway.host, port=gateway.port
    )
    serverless = BOTOCORE.create_client(
        "redshift-serverless",
        region_name=fake_aws.region,
        endpoint_url=fake_aws.endpoint_url,
        **key,
    )
    answer = serverless.get_credentials(workgroupName=workgroup)
    return answer["dbUser"], answer["dbPassword"]


def test_a_serverless_login_creates_the_role_user_as_serverless_does(
    fake_aws: FakeAws, gateway: IamGateway
) -> None:
    role = unique("analyst")
    sts = BOTOCORE.create_client(
        "sts",
        region_name=fake_aws.region,
        endpoint_url=fake_aws.endpoint_url,
        aws_access_key_id=fake_aws.base_key.access_key_id,
        aws_secret_access_key=fake_aws.base_key.secret_access_key,
    )
    issued = sts.assume_role(RoleArn=fake_aws.create_role(role), RoleSessionName="report")
    session = issued["Credentials"]

    user, password = serverless_login(
        fake_aws,
        gateway,
        {
            "aws_access_key_id": session["AccessKeyId"],
            "aws_secret_access_key": session["SecretAccessKey"],
            "aws_session_token": session["SessionToken"],
        },
    )

    assert user == f"IAMR:{role}"
    assert not role_exists(user)
    assert current_user(gateway, password, user) == user
    assert gateway.accepted == 1
    assert user in gateway.created_users


def test_a_serverless_login_as_an_iam_user_creates_the_iam_user_user(
    fake_aws: FakeAws, gateway: IamGateway
) -> None:
    name = unique("analyst")
    iam = BOTOCORE.create_client(
        "iam",
        region_name=fake_aws.region,
        endpoint_url=fake_aws.endpoint_url,
        aws_access_key_id=fake_aws.base_key.access_key_id,
        aws_secret_access_key=fake_aws.base_key.secret_access_key,
    )
    iam.create_user(UserName=name)
    key = iam.create_access_key(UserName=name)["AccessKey"]

    user, password = serverless_login(
        fake_aws,
        gateway,
        {
            "aws_access_key_id": key["AccessKeyId"],
            "aws_secret_access_key": key["SecretAccessKey"],
        },
    )

    assert user == f"IAM:{name}"
    assert current_user(gateway, password, user) == user
    assert user in gateway.created_users


def test_a_password_issued_for_another_database_is_refused(
    gateway: IamGateway, password: str
) -> None:
    refused(gateway, password, database="analytics")

    assert gateway.rejected == {"wrong_database": 1}


def test_an_expired_password_is_refused(
    fake_aws: FakeAws, password: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    later = lambda: datetime.now(timezone.utc) + timedelta(minutes=16)  # noqa: E731
    with IamGateway(
        "postgresql", upstream=UPSTREAM, authority=fake_aws, mode="redshift", clock=later
    ) as shifted:
        monkeypatch.setenv("SSL_CERT_FILE", str(shifted.ca_path))

        refused(shifted, password)

        assert shifted.rejected == {"expired": 1}


def test_a_client_that_does_not_trust_the_ca_sends_no_password(
    gateway: IamGateway, password: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE")

    with pytest.raises(redshift_connector.InterfaceError):
        connect(gateway, password)

    gateway.wait_idle()
    assert gateway.accepted == 0
    assert gateway.rejected == {}


def test_redshift_connector_refuses_a_server_without_tls_and_sends_nothing(
    fake_aws: FakeAws, password: str
) -> None:
    with IamGateway(
        "postgresql", upstream=UPSTREAM, authority=fake_aws, mode="redshift", offer_tls=False
    ) as plain:
        with (
            collecting_leaked_sockets(),
            pytest.raises(redshift_connector.InterfaceError, match="Server refuses SSL"),
        ):
            connect(plain, password)

        assert plain.secrets_seen_in_plaintext == ()


@pytest.mark.anyio
async def test_asyncpg_server_settings_unknown_to_postgresql_are_dropped(
    gateway: IamGateway, password: str
) -> None:
    conn = await asyncpg.connect(
        host=gateway.host,
        port=gateway.port,
        user=LOGIN,
        password=password,
        database="postgres",
        ssl=gateway.client_ssl_context(),
        server_settings={"client_protocol_version": "2", "driver_version": "test"},
    )
    try:
        assert await conn.fetchval("SELECT current_user") == LOGIN
    finally:
        await conn.close()


@pytest.mark.anyio
async def test_a_client_dropping_after_startup_leaves_no_connection_open(
    gateway: IamGateway,
) -> None:
    async with await anyio.connect_tcp(gateway.host, gateway.port) as stream:
        await stream.send(struct.pack("!ii", 8, 80877104))  # GSSENCRequest first
        assert await stream.receive(1) == b"N"
        await stream.send(struct.pack("!ii", 8, 80877103))
        assert await stream.receive(1) == b"S"

    await anyio.to_thread.run_sync(gateway.wait_idle)
    assert gateway.active == 0
    assert gateway.upstream_active == 0


def test_the_iam_redshift_fixture_is_ready_for_redshift_connector(
    iam_redshift: IamDatabase,
) -> None:
    config = iam_redshift.config
    assert config.backend == "redshift"
    assert iam_redshift.dsn.startswith("redshift://")
    redshift = botocore.session.get_session().create_client("redshift")  # env from fake_aws
    answer = redshift.get_cluster_credentials(
        DbUser=config.db_username,
        ClusterIdentifier=config.cluster_identifier,
        DbName=config.db_name,
    )
    cluster = redshift.describe_clusters(ClusterIdentifier=config.cluster_identifier)
    endpoint = cluster["Clusters"][0]["Endpoint"]

    with (
        redshift_connector.connect(
            host=endpoint["Address"],
            port=endpoint["Port"],
            user=answer["DbUser"],
            password=answer["DbPassword"],
            database=config.db_name,
            sslmode="verify-full",
        ) as conn,
        conn.cursor() as cursor,
    ):
        cursor.execute("SELECT current_user")
        assert cursor.fetchall() == ([iam_redshift.user],)


@pytest.mark.anyio
async def test_the_iam_redshift_fixture_lets_iampool_connect_as_the_iam_user(
    iam_redshift: IamDatabase,
) -> None:
    gateway = iam_redshift.gateway
    gateway.reset_counters()

    conn = await iampool.connect(iam_redshift.dsn, aws_iam=iam_redshift.config)
    try:
        assert await conn.fetchval("SELECT current_user") == iam_redshift.user == IAM_APP
    finally:
        conn.close()

    assert gateway.accepted == 1
