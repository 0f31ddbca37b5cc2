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
    (``secret_id``) and the rotations to run against it. Its two users (for alternating
    rotations) are named after the login user (``<it>_sa``, ``<it>_sb``).

``iam_login_user``
    The login user the ``iam_*`` fixtures create and log in as (``IAM:<it>`` behind the Redshift
    gateway): ``--iampool-login-user``, else ``IAMPOOL_TEST_LOGIN_USER``, else the
    ``iampool_login_user`` ini setting, else a name unique to the run (``iampool_<pid>_<hex>``),
    so that runs sharing a server never share a user. Under pytest-xdist a given name gets the
    worker's id appended (``app_gw0``).

A server that does not answer fails the test with how to start it; nothing is skipped. At the end
of the session the gateways drop the login users they created (the login user, ``IAM:<it>``,
users a Redshift login created); users that existed before the session are left as they were,
and so is DSQL's built-in ``admin`` (every run logs in as it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any

import pytest

from ._launch import LOGIN_USER_VARIABLE, REGION

if TYPE_CHECKING:
    from ._aws import FakeAws
    from ._database import IamDatabase, SecretDatabase
    from ._front import Mode
    from ._gateway import IamGateway
    from ._logins import WireProtocol

__all__ = [
    "fake_aws",
    "iam_dsql",
    "iam_login_user",
    "iam_mysql",
    "iam_postgres",
    "iam_redshift",
    "login_user_of",
    "secret_mysql",
    "secret_postgres",
    "secret_redshift",
]

PG_DSN_VARIABLE = "IAMPOOL_TEST_PG_DSN"
MYSQL_DSN_VARIABLE = "IAMPOOL_TEST_MYSQL_DSN"
DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_MYSQL_DSN = "mysql://root@127.0.0.1:3306/test"
LOGIN_USER_OPTION = "--iampool-login-user"
LOGIN_USER_INI = "iampool_login_user"

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


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("iampool", "iampool testing kit")
    group.addoption(
        LOGIN_USER_OPTION,
        dest="iampool_login_user",
        default=None,
        metavar="NAME",
        help=(
            f"login user the iam_* fixtures create and use (also {LOGIN_USER_VARIABLE} or the "
            f"{LOGIN_USER_INI} ini setting; default: a name unique to the run)"
        ),
    )
    parser.addini(
        LOGIN_USER_INI,
        "login user the iam_* fixtures create and use (default: a name unique to the run)",
        default="",
    )


_LOGIN_USER_KEY = pytest.StashKey[str]()


def login_user_of(config: pytest.Config) -> str:
    """The login user of this run: ``--iampool-login-user``, else ``IAMPOOL_TEST_LOGIN_USER``,
    else the ``iampool_login_user`` ini setting, else a name unique to the run. Decided once
    per run (a conftest may read it in ``pytest_configure``, as the fixture does later).

    Raises:
        pytest.UsageError: a name the kit cannot take (the message names where it came from).
    """
    from ._launch import login_user

    if _LOGIN_USER_KEY in config.stash:
        return config.stash[_LOGIN_USER_KEY]
    name = None
    for given, source in (
        (config.getoption("iampool_login_user"), LOGIN_USER_OPTION),
        (os.environ.get(LOGIN_USER_VARIABLE), LOGIN_USER_VARIABLE),
        (config.getini(LOGIN_USER_INI), f"ini setting {LOGIN_USER_INI}"),
    ):
        if given:
            try:
                name = login_user(str(given), source)
            except ValueError as exc:
                raise pytest.UsageError(f"iampool.testing: {exc}") from None
            break
    config.stash[_LOGIN_USER_KEY] = name = name or login_user(None, "")
    return name


@pytest.fixture(scope="session")
def iam_login_user(pytestconfig: pytest.Config) -> str:
    """The login user the ``iam_*`` fixtures create and log in as (:func:`login_user_of`)."""
    return login_user_of(pytestconfig)


@pytest.fixture(scope="session")
def fake_aws() -> Iterator[FakeAws]:
    """A local AWS (STS, RDS, Redshift, Redshift Serverless) that the whole session talks to."""
    from ._aws import FakeAws

    with FakeAws(region=REGION) as aws, aws.export_env():
        yield aws


@pytest.fixture(scope="session")
def iam_postgres(fake_aws: FakeAws, iam_login_user: str) -> Iterator[IamDatabase]:
    """PostgreSQL behind an RDS-style IAM gateway, with the ``aws_iam`` block to reach it."""
    with _gateway("postgresql", PG_DSN_VARIABLE, DEFAULT_PG_DSN, fake_aws, "rds") as gateway:
        yield _rds_database(
            gateway, fake_aws, login=iam_login_user, role_name="iampool-test-postgres"
        )


@pytest.fixture(scope="session")
def iam_mysql(fake_aws: FakeAws, iam_login_user: str) -> Iterator[IamDatabase]:
    """MySQL/MariaDB behind an RDS-style IAM gateway, with the ``aws_iam`` block to reach it."""
    with _gateway("mysql", MYSQL_DSN_VARIABLE, DEFAULT_MYSQL_DSN, fake_aws, "rds") as gateway:
        yield _rds_database(gateway, fake_aws, login=iam_login_user, role_name="iampool-test-mysql")


@pytest.fixture(scope="session")
def iam_redshift(fake_aws: FakeAws, iam_login_user: str) -> Iterator[IamDatabase]:
    """A Redshift provisioned cluster (PostgreSQL behind a Redshift-mode gateway)."""
    from ._launch import redshift_database, redshift_trust_bundle

    with _gateway("postgresql", PG_DSN_VARIABLE, DEFAULT_PG_DSN, fake_aws, "redshift") as gateway:
        # Redshift Serverless names its user after the role (IAMR:<role>): one per run too.
        database = redshift_database(
            gateway, fake_aws, login=iam_login_user, role_name=f"{iam_login_user}-redshift"
        )
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("SSL_CERT_FILE", str(redshift_trust_bundle(gateway.ca_path)))
            yield database


@pytest.fixture(scope="session")
def iam_dsql(fake_aws: FakeAws) -> Iterator[IamDatabase]:
    """An Aurora DSQL cluster (PostgreSQL behind a DSQL-mode gateway), logged in as ``admin``."""
    from ._launch import dsql_database

    with _gateway("postgresql", PG_DSN_VARIABLE, DEFAULT_PG_DSN, fake_aws, "dsql") as gateway:
        yield dsql_database(gateway, fake_aws, role_name="iampool-test-dsql")


@pytest.fixture(scope="session")
def secret_postgres(fake_aws: FakeAws, iam_login_user: str) -> Iterator[SecretDatabase]:
    """PostgreSQL behind a password-mode gateway, its login in a Secrets Manager secret."""
    from ._launch import secret_database

    with _gateway("postgresql", PG_DSN_VARIABLE, DEFAULT_PG_DSN, fake_aws, "password") as gateway:
        yield secret_database(gateway, fake_aws, login=iam_login_user)


@pytest.fixture(scope="session")
def secret_mysql(fake_aws: FakeAws, iam_login_user: str) -> Iterator[SecretDatabase]:
    """MySQL/MariaDB behind a password-mode gateway, its login in a Secrets Manager secret."""
    from ._launch import secret_database

    with _gateway("mysql", MYSQL_DSN_VARIABLE, DEFAULT_MYSQL_DSN, fake_aws, "password") as gateway:
        yield secret_database(gateway, fake_aws, login=iam_login_user)


@pytest.fixture(scope="session")
def secret_redshift(fake_aws: FakeAws, iam_login_user: str) -> Iterator[SecretDatabase]:
    """A Redshift cluster's password login (PostgreSQL behind a password-mode gateway that
    speaks as Redshift does), its login in a Secrets Manager secret; while it is in use
    ``SSL_CERT_FILE`` also trusts the gateway's CA."""
    from ._launch import redshift_trust_bundle, secret_database

    with _gateway(
        "postgresql", PG_DSN_VARIABLE, DEFAULT_PG_DSN, fake_aws, "password", redshift_wire=True
    ) as gateway:
        database = secret_database(gateway, fake_aws, login=iam_login_user)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("SSL_CERT_FILE", str(redshift_trust_bundle(gateway.ca_path)))
            yield database


def _rds_database(
    gateway: IamGateway, fake_aws: FakeAws, *, login: str, role_name: str
) -> IamDatabase:
    from ._launch import rds_database

    return rds_database(gateway, fake_aws, login=login, role_name=role_name)


@contextmanager
def _gateway(
    protocol: WireProtocol,
    variable: str,
    default: str,
    fake_aws: FakeAws,
    mode: Mode,
    **options: Any,
) -> Iterator[IamGateway]:
    """A started gateway in front of the server named by ``variable``, or a clear failure. At
    the end, the login users this session created go; those that existed before it stay
    (another session may be using them)."""
    from ._launch import running_gateway

    upstream = os.environ.get(variable) or default
    with ExitStack() as stack:
        try:
            gateway = stack.enter_context(
                running_gateway(protocol, upstream, fake_aws, mode, **options)
            )
        except ConnectionError as exc:
            hint = _HOW_TO_START[protocol].format(variable=variable)
            pytest.fail(f"iampool.testing: {exc}; {hint}.", pytrace=False)
        yield gateway
