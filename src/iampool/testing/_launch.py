"""Starting the stand-in pieces: gateways in front of real servers, the roles, clusters and login
users each needs, and the ``IamDatabase`` describing how to reach it.

One implementation for every launcher: the pytest fixtures (``plugin.py``), the ``iampool
standin`` process (``_standin.py``) and the demo. Nothing here knows about pytest.

Login user names: ``login_user()`` picks the name a run uses, from what it was given or a new
unique one (``iampool_<pid>_<random>``), so that two runs on one server never share a user that
one of them would drop at its end (``IamGateway.drop_created_users`` drops only what this
process created, and only once no running gateway here relies on it).
"""

from __future__ import annotations

import os
import re
import secrets
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._aws import FakeAws
    from ._database import IamDatabase, SecretDatabase
    from ._front import Mode
    from ._gateway import IamGateway
    from ._logins import WireProtocol

__all__ = [
    "CLUSTER_IDENTIFIER",
    "DSQL_ADMIN",
    "LOGIN_USER_VARIABLE",
    "REGION",
    "WORKGROUP",
    "check_login_user",
    "dsql_database",
    "login_user",
    "rds_database",
    "redshift_database",
    "redshift_serverless_database",
    "redshift_trust_bundle",
    "running_gateway",
    "secret_database",
    "unique_login_user",
]

REGION = "us-east-1"
CLUSTER_IDENTIFIER = "iampool-test"
WORKGROUP = "iampool-serverless"
DSQL_ADMIN = "admin"  # Aurora DSQL's built-in role: DbConnectAdmin tokens
LOGIN_USER_VARIABLE = "IAMPOOL_TEST_LOGIN_USER"

# Safe as a PostgreSQL role, a MySQL/MariaDB account (MySQL takes 32 characters), an IAM role
# name and a shell word: no quoting question anywhere.
_LOGIN_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}")


def unique_login_user() -> str:
    """A login user name of this process's own: ``iampool_<pid in hex>_<6 random hex>``."""
    return f"iampool_{os.getpid():x}_{secrets.token_hex(3)}"


def check_login_user(name: str, source: str) -> str:
    """``name`` if it can be a login user everywhere, else ``ValueError`` naming ``source``."""
    if not _LOGIN_USER.fullmatch(name):
        raise ValueError(
            f"{source}: {name[:40]!r} is not a login user name this kit takes: 1 to 32 ASCII "
            "letters, digits or underscores, not starting with a digit (e.g. app_test)"
        )
    return name


def login_user(given: str | None, source: str, *, per_worker: bool = True) -> str:
    """The login user for a run: ``given`` (checked), else a new unique name.

    Under pytest-xdist (and ``per_worker``) a given name gets the worker's id appended
    (``app_gw0``): each worker is a run of its own, and two runs sharing one user would drop
    it under each other.
    """
    if not given:
        return unique_login_user()
    name = check_login_user(given, source)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "") if per_worker else ""
    if worker and re.fullmatch(r"gw\d{1,4}", worker):
        return check_login_user(f"{name}_{worker}", f"{source} (with the xdist worker's id)")
    return name


@contextmanager
def running_gateway(
    protocol: WireProtocol,
    upstream: str,
    fake_aws: FakeAws,
    mode: Mode,
    **options: Any,
) -> Iterator[IamGateway]:
    """A started ``IamGateway`` in front of ``upstream``; at the end it drops the login users
    this process created there (those that existed before stay) and stops.

    Raises:
        ConnectionError: the upstream server does not answer (nothing is left running).
        ValueError: a DSN the gateway cannot take.
    """
    from ._gateway import IamGateway

    gateway = IamGateway(
        protocol, upstream=upstream, authority=fake_aws, region=fake_aws.region, mode=mode,
        **options,
    )  # fmt: skip
    gateway.start()
    try:
        yield gateway
    finally:
        try:
            gateway.drop_created_users()
        finally:
            gateway.stop()


def rds_database(
    gateway: IamGateway, fake_aws: FakeAws, *, login: str, role_name: str
) -> IamDatabase:
    """RDS/Aurora (PostgreSQL or MySQL) behind ``gateway``: the login user, a role to assume
    and the ``aws_iam`` block naming both."""
    from .._config import AwsIamConfig
    from ._database import IamDatabase

    gateway.ensure_user(login)
    config = AwsIamConfig.from_extra(
        {
            "enabled": True,
            "region": fake_aws.region,
            "role_arn": fake_aws.create_role(role_name),
            "db_username": login,
        }
    )
    return IamDatabase(
        dsn=gateway.dsn(login), config=config, gateway=gateway, ca_path=gateway.ca_path, user=login
    )


def redshift_database(
    gateway: IamGateway,
    fake_aws: FakeAws,
    *,
    login: str,
    role_name: str,
    cluster_identifier: str = CLUSTER_IDENTIFIER,
) -> IamDatabase:
    """A Redshift provisioned cluster behind a Redshift-mode ``gateway``: the cluster in the
    fake AWS (its endpoint is the gateway), the user ``IAM:<login>`` GetClusterCredentials
    names, a role and the block. Clients also need :func:`redshift_trust_bundle`."""
    from .._config import AwsIamConfig
    from ._database import IamDatabase

    database = gateway.upstream.database or "postgres"
    # DescribeClusters reports the gateway, so a config without a DSN host finds it too.
    fake_aws.create_redshift_cluster(
        cluster_identifier, db_name=database, address=gateway.host, port=gateway.port
    )
    role_arn = fake_aws.create_role(role_name)
    user = f"IAM:{login}"  # the DbUser GetClusterCredentials returns
    gateway.ensure_user(user)
    config = AwsIamConfig.from_extra(
        {
            "enabled": True,
            "region": fake_aws.region,
            "role_arn": role_arn,
            "db_username": login,
            "cluster_identifier": cluster_identifier,
            "db_name": database,
        }
    )
    return IamDatabase(
        dsn=gateway.dsn(user, database),
        config=config,
        gateway=gateway,
        ca_path=gateway.ca_path,
        user=user,
    )


def redshift_serverless_database(
    gateway: IamGateway,
    fake_aws: FakeAws,
    *,
    role_name: str,
    workgroup: str = WORKGROUP,
) -> IamDatabase:
    """A Redshift Serverless workgroup behind a Redshift-mode ``gateway``. GetCredentials names
    the user after the role (``IAMR:<role_name>``): give each run a role name of its own."""
    from .._config import AwsIamConfig
    from ._database import IamDatabase

    database = gateway.upstream.database or "postgres"
    fake_aws.create_workgroup(workgroup, db_name=database, address=gateway.host, port=gateway.port)
    role_arn = fake_aws.create_role(role_name)
    user = f"IAMR:{role_name}"
    gateway.ensure_user(user)
    config = AwsIamConfig.from_extra(
        {
            "enabled": True,
            "region": fake_aws.region,
            "role_arn": role_arn,
            "workgroup_name": workgroup,
            "db_name": database,
        }
    )
    # No user in the DSN: GetCredentials decides it (iampool refuses a DSN user here).
    return IamDatabase(
        dsn=f"redshift://{gateway.endpoint}/{database}?sslmode=verify-full",
        config=config,
        gateway=gateway,
        ca_path=gateway.ca_path,
        user=user,
    )


def dsql_database(gateway: IamGateway, fake_aws: FakeAws, *, role_name: str) -> IamDatabase:
    """An Aurora DSQL cluster behind a DSQL-mode ``gateway``, logged in as ``admin``.

    ``admin`` is built into every DSQL cluster: it is created on the server if missing and
    left there (``keep=True``), since every run on the server logs in as it.
    """
    from .._config import AwsIamConfig
    from ._database import IamDatabase

    gateway.ensure_user(DSQL_ADMIN, keep=True)
    config = AwsIamConfig.from_extra(
        {
            "enabled": True,
            "dsql": True,
            "region": fake_aws.region,
            "role_arn": fake_aws.create_role(role_name),
            "db_username": DSQL_ADMIN,
        }
    )
    return IamDatabase(
        dsn=gateway.dsn(DSQL_ADMIN),
        config=config,
        gateway=gateway,
        ca_path=gateway.ca_path,
        user=DSQL_ADMIN,
    )


def secret_database(gateway: IamGateway, fake_aws: FakeAws, *, login: str) -> SecretDatabase:
    """A password login behind a password-mode ``gateway``, kept in a new Secrets Manager secret
    (RDS's JSON: user, password, engine, host, port), with the block naming it. Its two users,
    between which an alternating-users rotation switches, are named after ``login`` (one pair
    per run, like the login user)."""
    import uuid

    from .._config import AwsIamConfig
    from ._database import SecretDatabase, new_password

    users = (f"{login[:29]}_sa", f"{login[:29]}_sb")
    first = {"username": users[0], "password": new_password()}
    gateway.set_password(first["username"], first["password"])
    gateway.ensure_user(users[1])
    host, port = gateway.signed_endpoint
    engine = "mysql" if gateway.protocol == "mysql" else "postgres"
    engine = "redshift" if gateway.redshift_wire else engine
    name = f"iampool-test-{gateway.protocol}-{uuid.uuid4().hex[:12]}"
    arn = fake_aws.create_secret(name, {**first, "engine": engine, "host": host, "port": port})
    return SecretDatabase(
        dsn=gateway.dsn("").replace("://@", "://", 1),  # no user: the secret names it
        config=AwsIamConfig.from_extra({"enabled": True, "secret_id": arn}),
        gateway=gateway,
        fake_aws=fake_aws,
        ca_path=gateway.ca_path,
        secret_id=arn,
        users=users,
    )


def redshift_trust_bundle(ca_path: Path, *more: Path) -> Path:
    """A PEM file next to ``ca_path``: the default trust store plus the gateways' CAs, for
    ``SSL_CERT_FILE`` (redshift-connector reads no CA file, only the default store)."""
    current = ssl.get_default_verify_paths().cafile  # honours an SSL_CERT_FILE already set
    bundle = ca_path.with_name("redshift-trust.pem")
    system = Path(current).read_bytes() if current and Path(current).is_file() else b""
    bundle.write_bytes(b"\n".join([system, *(path.read_bytes() for path in (ca_path, *more))]))
    return bundle
