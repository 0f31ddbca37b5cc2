"""IamGateway in Redshift mode in front of the real PostgreSQL 15, driven by redshift-connector.

redshift-connector takes no CA file: it trusts the default store (``SSL_CERT_FILE``) plus
Amazon's bundle, and with ``sslmode="verify-full"`` checks the host name.
"""

from __future__ import annotations

import gc
import os
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import anyio
import asyncpg
import pytest
import redshift_connector

from iampool.testing import IamGateway

pytestmark = pytest.mark.anyio

UPSTREAM = os.environ.get("IAMPOOL_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
LOGIN = "IAM:app"
PASSWORD = "AskR3dsh1ft+Temp/Passw0rd=="


@dataclass(frozen=True)
class Issued:
    user: str
    password: str
    expires_at: datetime
    database: str | None


class Authority:
    """The smallest stand-in for GetClusterCredentials: passwords it handed out."""

    def __init__(self, *issued: Issued) -> None:
        self.issued = {(item.user, item.password): item for item in issued}

    def signing_key(self, access_key_id: str) -> None:
        return None

    def redshift_password(self, user: str, password: str) -> Issued | None:
        return self.issued.get((user, password))


def issued_now(database: str | None = "postgres") -> Issued:
    return Issued(LOGIN, PASSWORD, datetime.now(timezone.utc) + timedelta(minutes=15), database)


@pytest.fixture(scope="module")
def gateway() -> Iterator[IamGateway]:
    authority = Authority(
        issued_now(), Issued("IAM:other", "other-pw", issued_now().expires_at, None)
    )
    with IamGateway(
        "postgresql", upstream=UPSTREAM, authority=authority, mode="redshift"
    ) as gateway:
        gateway.ensure_user(LOGIN)
        yield gateway


@pytest.fixture(autouse=True)
def trust_the_gateway(gateway: IamGateway, monkeypatch: pytest.MonkeyPatch) -> None:
    gateway.reset_counters()
    monkeypatch.setenv("SSL_CERT_FILE", str(gateway.ca_path))


def connect(
    gateway: IamGateway, password: str = PASSWORD, **kwargs: object
) -> redshift_connector.Connection:
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


def refused(gateway: IamGateway, password: str = PASSWORD, **kwargs: object) -> dict[str, str]:
    """Attempt a login that must fail; the server's error fields."""
    with collecting_leaked_sockets():
        return login_error(gateway, password, **kwargs)


def login_error(gateway: IamGateway, password: str, **kwargs: object) -> dict[str, str]:
    # A function of its own: the traceback holding the leaked socket dies with this frame.
    with pytest.raises(redshift_connector.InterfaceError) as error:
        connect(gateway, password, **kwargs)
    return dict(error.value.args[0])


def test_an_issued_password_logs_in_to_the_real_server_as_the_iam_user(
    gateway: IamGateway,
) -> None:
    with connect(gateway) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT current_user, 1")
        assert cursor.fetchall() == (["IAM:app", 1],)
        cursor.execute("SELECT %s::int + 1", (41,))
        assert cursor.fetchall() == ([42],)

    assert gateway.accepted == 1
    assert gateway.rejected == {}


def test_the_gateway_reports_redshifts_server_version(gateway: IamGateway) -> None:
    with connect(gateway) as conn:
        statuses = dict(conn.parameter_statuses)

    assert statuses[b"server_version"] == b"8.0.2"


def test_startup_parameters_only_redshift_knows_are_dropped_and_the_rest_kept(
    gateway: IamGateway,
) -> None:
    with connect(gateway, application_name="billing-report") as conn, conn.cursor() as cursor:
        cursor.execute("SELECT current_setting('application_name')")
        assert cursor.fetchall() == (["billing-report"],)


@pytest.mark.parametrize(
    ("user", "password", "reason"),
    [
        (LOGIN, "not-the-issued-password", "bad_password"),
        ("IAM:other", PASSWORD, "bad_password"),
        (LOGIN, "other-pw", "bad_password"),
    ],
    ids=["wrong-password", "another-users-login", "another-users-password"],
)
def test_a_password_not_issued_to_this_user_is_refused(
    gateway: IamGateway, user: str, password: str, reason: str
) -> None:
    error = refused(gateway, password, user=user)

    assert error["C"] == "28000"
    assert error["M"] == f'PAM authentication failed for user "{user}"'
    assert gateway.rejected == {reason: 1}


def test_a_password_for_another_database_is_refused(gateway: IamGateway) -> None:
    refused(gateway, database="analytics")

    assert gateway.rejected == {"wrong_database": 1}


def test_an_expired_password_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    later = lambda: datetime.now(timezone.utc) + timedelta(minutes=16)  # noqa: E731
    with IamGateway(
        "postgresql",
        upstream=UPSTREAM,
        authority=Authority(issued_now()),
        mode="redshift",
        clock=later,
    ) as shifted:
        monkeypatch.setenv("SSL_CERT_FILE", str(shifted.ca_path))

        refused(shifted)

        assert shifted.rejected == {"expired": 1}


def test_a_client_that_does_not_trust_the_ca_sends_no_password(
    gateway: IamGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE")

    with pytest.raises(redshift_connector.InterfaceError):
        connect(gateway)

    gateway.wait_idle()
    assert gateway.accepted == 0
    assert gateway.rejected == {}


def test_redshift_connector_refuses_a_server_without_tls_and_sends_nothing() -> None:
    with IamGateway(
        "postgresql",
        upstream=UPSTREAM,
        authority=Authority(issued_now()),
        mode="redshift",
        offer_tls=False,
    ) as plain:
        with (
            collecting_leaked_sockets(),
            pytest.raises(redshift_connector.InterfaceError, match="Server refuses SSL"),
        ):
            connect(plain)

        assert plain.secrets_seen_in_plaintext == ()


@pytest.mark.anyio
async def test_asyncpg_server_settings_unknown_to_postgresql_are_dropped(
    gateway: IamGateway,
) -> None:
    conn = await asyncpg.connect(
        host=gateway.host,
        port=gateway.port,
        user=LOGIN,
        password=PASSWORD,
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
