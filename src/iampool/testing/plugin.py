"""pytest plugin: fixtures that put a fake AWS and IAM gateways in front of your test databases.

Registered as the ``iampool`` pytest11 entry point, so installing ``iampool[testing]`` is enough.
Everything is imported inside the fixtures: the plugin loads even where an extra is missing.

Fixtures (all session-scoped, started on first use):

``fake_aws``
    A started :class:`iampool.testing.FakeAws` whose ``export_env()`` is applied for the session
    (``AWS_ENDPOINT_URL`` and test credentials), so iampool's AWS calls reach it.
``iam_postgres`` / ``iam_mysql``
    An :class:`iampool.testing.IamDatabase` for an RDS-style gateway in front of
    ``IAMPOOL_TEST_PG_DSN`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``) or
    ``IAMPOOL_TEST_MYSQL_DSN`` (default ``mysql://root@127.0.0.1:3306/test``).
``iam_redshift``
    The same for a Redshift provisioned cluster emulated on the PostgreSQL server; while it is
    in use ``SSL_CERT_FILE`` also trusts the gateway's CA (redshift-connector reads no CA file).
``iam_dsql``
    An Aurora DSQL cluster emulated on the PostgreSQL server: a DSQL-mode gateway checking
    ``DbConnectAdmin`` tokens for the ``admin`` role, with an ``aws_iam`` block saying
    ``"dsql": true`` (and the region: the gateway's host names none).

``secret_postgres`` / ``secret_mysql`` / ``secret_redshift``
    A :class:`iampool.testing.SecretDatabase`: a password-mode gateway in front of the same
    server (for Redshift: speaking as a Redshift cluster does), its login kept in a Secrets
    Manager secret of ``fake_aws`` (RDS's JSON), with the ``aws_iam`` block naming it
    (``secret_id``) and the rotations to run against it.

A server that does not answer fails the test with how to start it; nothing is skipped. At the end
of the session the gateways drop the login users they created (``app``, ``IAM:app``, users a
Redshift login created); users that existed before the session are left as they were.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ._aws import FakeAws
    from ._database import IamDatabase, SecretDatabase
    from ._front import Mode
    from ._gateway import IamGateway
    from ._logins import WireProtocol

__all__ = [
    "fake_aws",
    "iam_dsql",
    "iam_mysql",
    "iam_postgres",
    "iam_redshift",
    "secret_mysql",
    "secret_postgres",
    "secret_redshift",
]

REGION = "us-east-1"
LOGIN_USER = "app"
CLUSTER_IDENTIFIER = "iampool-test"
DSQL_ADMIN = "admin"  # Aurora DSQL's built-in role: DbConnectAdmin tokens
SECRET_USERS = ("app_secret_a", "app_secret_b")  # the two users of alternating rotations
PG_DSN_VARIABLE = "IAMPOOL_TEST_PG_DSN"
MYSQL_DSN_VARIABLE = "IAMPOOL_TEST_MYSQL_DSN"
DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_MYSQL_DSN = "mysql://root@127.0.0.1:3306/test"

_HOW_TO_START = {
    "postgresql": (
        "start PostgreSQL (Debian: pg_ctlcluster --skip-systemctl-redirect "
        "$(ls /etc/postgresql) main start) or point {variable} at a running server's admin DSN"
    ),
    "mysql": (
        "start MariaDB/MySQL (Debian: start-stop-daemon --start --oknodo --background "
        "--exec /usr/sbin/mariadbd) or point {variable} at a running server's admin DSN"
    ),
}


@pytest.fixture(scope="session")
def fake_aws() -> Iterator[FakeAws]:
    """A local AWS (STS, RDS, Redshift, Redshift Serverless) that the whole session talks to."""
    from ._aws import FakeAws

    with FakeAws(region=REGION) as aws, aws.export_env():
        yield aws


@pytest.fixture(scope="session")
def iam_postgres(fake_aws: FakeAws) -> Iterator[IamDatabase]:
    """PostgreSQL behind an RDS-style IAM gateway, with the ``aws_iam`` block to reach it."""
    with _gateway("postgresql", PG_DSN_VARIABLE, DEFAULT_PG_DSN, fake_aws, "rds") as gateway:
        yield _rds_database(gateway, fake_aws, role_name="iampool-test-postgres")


@pytest.fixture(scope="session")
def iam_mysql(fake_aws: FakeAws) -> Iterator[IamDatabase]:
    """MySQL/MariaDB behind an RDS-style IAM gateway, with the ``aws_iam`` block to reach it."""
    with _gateway("mysql", MYSQL_DSN_VARIABLE, DEFAULT_MYSQL_DSN, fake_aws, "rds") as gateway:
        yield _rds_database(gateway, fake_aws, role_name="iampool-test-mysql")


@pytest.fixture(scope="session")
def iam_redshift(fake_aws: FakeAws) -> Iterator[IamDatabase]:
    """A Redshift provisioned cluster (PostgreSQL behind a Redshift-mode gateway)."""
    from .._config import AwsIamConfig
    from ._database import IamDatabase

    with _gateway("postgresql", PG_DSN_VARIABLE, DEFAULT_PG_DSN, fake_aws, "redshift") as gateway:
        database = gateway.upstream.database or "postgres"
        # DescribeClusters reports the gateway, so a config without a DSN host finds it too.
        fake_aws.create_redshift_cluster(
            CLUSTER_IDENTIFIER, db_name=database, address=gateway.host, port=gateway.port
        )
        role_arn = fake_aws.create_role("iampool-test-redshift")
        login = f"IAM:{LOGIN_USER}"  # the DbUser GetClusterCredentials returns
        gateway.ensure_user(login)
        config = AwsIamConfig.from_extra(
            {
                "enabled": True,
                "region": REGION,
                "role_arn": role_arn,
                "db_username": LOGIN_USER,
                "cluster_identifier": CLUSTER_IDENTIFIER,
                "db_name": database,
            }
        )
        with _trusting_for_redshift(gateway.ca_path):
            yield IamDatabase(
                dsn=gateway.dsn(login, database),
                config=config,
                gateway=gateway,
                ca_path=gateway.ca_path,
                user=login,
            )


@pytest.fixture(scope="session")
def iam_dsql(fake_aws: FakeAws) -> Iterator[IamDatabase]:
    """An Aurora DSQL cluster (PostgreSQL behind a DSQL-mode gateway), logged in as ``admin``."""
    from .._config import AwsIamConfig
    from ._database import IamDatabase

    with _gateway("postgresql", PG_DSN_VARIABLE, DEFAULT_PG_DSN, fake_aws, "dsql") as gateway:
        gateway.ensure_user(DSQL_ADMIN)
        config = AwsIamConfig.from_extra(
            {
                "enabled": True,
                "dsql": True,
                "region": REGION,
                "role_arn": fake_aws.create_role("iampool-test-dsql"),
                "db_username": DSQL_ADMIN,
            }
        )
        yield IamDatabase(
            dsn=gateway.dsn(DSQL_ADMIN),
            config=config,
            gateway=gateway,
            ca_path=gateway.ca_path,
            user=DSQL_ADMIN,
        )


@pytest.fixture(scope="session")
def secret_postgres(fake_aws: FakeAws) -> Iterator[SecretDatabase]:
    """PostgreSQL behind a password-mode gateway, its login in a Secrets Manager secret."""
    with _gateway("postgresql", PG_DSN_VARIABLE, DEFAULT_PG_DSN, fake_aws, "password") as gateway:
        yield _secret_database(gateway, fake_aws)


@pytest.fixture(scope="session")
def secret_mysql(fake_aws: FakeAws) -> Iterator[SecretDatabase]:
    """MySQL/MariaDB behind a password-mode gateway, its login in a Secrets Manager secret."""
    with _gateway("mysql", MYSQL_DSN_VARIABLE, DEFAULT_MYSQL_DSN, fake_aws, "password") as gateway:
        yield _secret_database(gateway, fake_aws)


@pytest.fixture(scope="session")
def secret_redshift(fake_aws: FakeAws) -> Iterator[SecretDatabase]:
    """A Redshift cluster's password login (PostgreSQL behind a password-mode gateway that
    speaks as Redshift does), its login in a Secrets Manager secret; while it is in use
    ``SSL_CERT_FILE`` also trusts the gateway's CA."""
    with (
        _gateway(
            "postgresql", PG_DSN_VARIABLE, DEFAULT_PG_DSN, fake_aws, "password", redshift_wire=True
        ) as gateway,
        _trusting_for_redshift(gateway.ca_path),
    ):
        yield _secret_database(gateway, fake_aws)


def _secret_database(gateway: IamGateway, fake_aws: FakeAws) -> SecretDatabase:
    import uuid

    from .._config import AwsIamConfig
    from ._database import SecretDatabase, new_password

    first = {"username": SECRET_USERS[0], "password": new_password()}
    gateway.set_password(first["username"], first["password"])
    gateway.ensure_user(SECRET_USERS[1])
    host, port = gateway.signed_endpoint
    engine = "mysql" if gateway.protocol == "mysql" else "postgres"
    engine = "redshift" if gateway.redshift_wire else engine
    name = f"iampool-test-{gateway.protocol}-{uuid.uuid4().hex[:12]}"
    arn = fake_aws.create_secret(name, {**first, "engine": engine, "host": host, "port": port})
    config = AwsIamConfig.from_extra({"enabled": True, "secret_id": arn})
    dsn = gateway.dsn("").replace("://@", "://", 1)  # no user: the secret names it
    return SecretDatabase(
        dsn=dsn,
        config=config,
        gateway=gateway,
        fake_aws=fake_aws,
        ca_path=gateway.ca_path,
        secret_id=arn,
        users=SECRET_USERS,
    )


def _rds_database(gateway: IamGateway, fake_aws: FakeAws, *, role_name: str) -> IamDatabase:
    from .._config import AwsIamConfig
    from ._database import IamDatabase

    gateway.ensure_user(LOGIN_USER)
    config = AwsIamConfig.from_extra(
        {
            "enabled": True,
            "region": REGION,
            "role_arn": fake_aws.create_role(role_name),
            "db_username": LOGIN_USER,
        }
    )
    return IamDatabase(
        dsn=gateway.dsn(LOGIN_USER),
        config=config,
        gateway=gateway,
        ca_path=gateway.ca_path,
        user=LOGIN_USER,
    )


@contextmanager
def _gateway(
    protocol: WireProtocol,
    variable: str,
    default: str,
    fake_aws: FakeAws,
    mode: Mode,
    *,
    redshift_wire: bool = False,
) -> Iterator[IamGateway]:
    """A started gateway in front of the server named by ``variable``, or a clear failure."""
    from ._gateway import IamGateway

    upstream = os.environ.get(variable) or default
    gateway = IamGateway(
        protocol,
        upstream=upstream,
        authority=fake_aws,
        region=REGION,
        mode=mode,
        redshift_wire=redshift_wire,
    )
    try:
        gateway.start()
    except ConnectionError as exc:
        hint = _HOW_TO_START[protocol].format(variable=variable)
        pytest.fail(f"iampool.testing: {exc}; {hint}.", pytrace=False)
    try:
        yield gateway
    finally:
        try:
            # The login users this session created go; those that existed before it stay
            # (another session may be using them).
            gateway.drop_created_users()
        finally:
            gateway.stop()


@contextmanager
def _trusting_for_redshift(ca_path: Path) -> Iterator[None]:
    """Let redshift-connector verify the gateway: it trusts only the default store and its own
    bundle, so ``SSL_CERT_FILE`` points at the default store plus the gateway's CA."""
    current = ssl.get_default_verify_paths().cafile  # honours an SSL_CERT_FILE already set
    bundle = ca_path.with_name("redshift-trust.pem")
    system = Path(current).read_bytes() if current and Path(current).is_file() else b""
    bundle.write_bytes(system + b"\n" + ca_path.read_bytes())
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SSL_CERT_FILE", str(bundle))
        yield
