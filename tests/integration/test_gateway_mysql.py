"""IamGateway in front of the real MariaDB 10.11, driven by plain aiomysql and PyMySQL clients.

Tokens come from botocore's own ``generate_db_auth_token`` with keys the AWS stand-in issued.
"""

from __future__ import annotations

import os
import ssl
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

import aiomysql
import anyio
import pymysql
import pytest

import iampool
from iampool.testing import FakeAws, IamDatabase, IamGateway, _users, plugin
from iampool.testing._front import Upstream
from iampool.testing.mysql import run_admin_statements
from tests.users import APP, OTHER

from .rds_tokens import (
    NEVER_ISSUED,
    Authority,
    Key,
    Tokens,
    assumed_role_tokens,
)

pytestmark = pytest.mark.anyio

UPSTREAM = os.environ.get("IAMPOOL_TEST_MYSQL_DSN", "mysql://root@127.0.0.1:3306/test")


@pytest.fixture(scope="module")
def token_for(fake_aws: FakeAws) -> Tokens:
    """Tokens signed with temporary credentials from AssumeRole on the fake AWS."""
    return assumed_role_tokens(fake_aws, "gateway-test-mysql")


@pytest.fixture(scope="module")
def gateway(fake_aws: FakeAws) -> Iterator[IamGateway]:
    with IamGateway("mysql", upstream=UPSTREAM, authority=fake_aws) as gateway:
        gateway.ensure_user(APP)
        yield gateway
        gateway.drop_created_users()


@pytest.fixture(autouse=True)
def fresh_counters(gateway: IamGateway) -> None:
    gateway.reset_counters()


async def connect(gateway: IamGateway, password: str, **kwargs: Any) -> aiomysql.Connection:
    options: dict[str, Any] = {
        "host": gateway.host,
        "port": gateway.port,
        "user": APP,
        "db": "test",
        "ssl": gateway.client_ssl_context(),
    }
    options.update(kwargs)
    return await aiomysql.connect(password=password, **options)


async def current_user(conn: aiomysql.Connection) -> str:
    async with conn.cursor() as cursor:
        await cursor.execute("SELECT CURRENT_USER()")
        (row,) = await cursor.fetchall()
        return str(row[0])


async def close(conn: aiomysql.Connection, gateway: IamGateway) -> None:
    """Quit, and let the TLS shutdown finish: the gateway hanging up is what completes it."""
    await conn.ensure_closed()
    await wait_idle(gateway)


async def wait_idle(gateway: IamGateway) -> None:
    await anyio.to_thread.run_sync(gateway.wait_idle)


async def test_a_valid_token_logs_in_to_the_real_server_as_the_iam_user(
    gateway: IamGateway, token_for: Tokens
) -> None:
    conn = await connect(gateway, token_for(gateway))
    try:
        assert await current_user(conn) == f"{APP}@%"
        async with conn.cursor() as cursor:
            await cursor.execute("SELECT %s + 1", (41,))
            assert await cursor.fetchone() == (42,)
    finally:
        await close(conn, gateway)

    assert gateway.accepted == 1
    assert gateway.rejected == {}
    await wait_idle(gateway)


async def test_the_greeting_mirrors_the_upstream_server(
    gateway: IamGateway, token_for: Tokens
) -> None:
    conn = await connect(gateway, token_for(gateway))
    try:
        assert "MariaDB" in conn.get_server_info()
        async with conn.cursor() as cursor:
            await cursor.execute("SELECT CONNECTION_ID()")
            assert await cursor.fetchone() == (conn.server_thread_id[0],)
    finally:
        await close(conn, gateway)


async def test_a_client_already_using_mysql_clear_password_needs_no_auth_switch(
    gateway: IamGateway, token_for: Tokens
) -> None:
    conn = await connect(gateway, token_for(gateway), auth_plugin="mysql_clear_password")
    try:
        assert await current_user(conn) == f"{APP}@%"
    finally:
        await close(conn, gateway)


def test_a_sync_pymysql_client_verifies_the_certificate_and_logs_in(
    gateway: IamGateway, token_for: Tokens
) -> None:
    conn = pymysql.connect(
        host=gateway.host,
        port=gateway.port,
        user=APP,
        password=token_for(gateway),
        database="test",
        ssl_ca=str(gateway.ca_path),
        ssl_verify_identity=True,
    )
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT CURRENT_USER()")
            assert cursor.fetchone() == (f"{APP}@%",)
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("variant", "reason"),
    [
        ("forged signature", "bad_signature"),
        ("token for another user", "wrong_user"),
        ("token for another port", "wrong_endpoint"),
        ("token for another region", "wrong_region"),
        ("key the authority never issued", "unknown_key"),
        ("token signed 20 minutes ago asking for an hour", "expired"),
    ],
)
async def test_an_invalid_token_is_refused_with_access_denied(
    gateway: IamGateway, variant: str, reason: str, token_for: Tokens
) -> None:
    token = {
        "forged signature": lambda: token_for(gateway)[:-4] + "beef",
        "token for another user": lambda: token_for(gateway, OTHER),
        "token for another port": lambda: token_for(gateway, port=gateway.port + 1),
        "token for another region": lambda: token_for(gateway, region="eu-west-1"),
        "key the authority never issued": lambda: token_for(gateway, key=NEVER_ISSUED),
        "token signed 20 minutes ago asking for an hour": lambda: token_for(
            gateway,
            expires_in=3600,
            signed_at=datetime.now(timezone.utc) - timedelta(minutes=20),
        ),
    }[variant]()

    with pytest.raises(pymysql.err.OperationalError) as refused:
        await connect(gateway, token)

    assert refused.value.args == (
        1045,
        f"Access denied for user '{APP}'@'127.0.0.1' (using password: YES)",
    )
    assert gateway.rejected == {reason: 1}
    await wait_idle(gateway)
    assert gateway.upstream_active == 0


async def test_reject_next_refuses_a_valid_login_once(
    gateway: IamGateway, token_for: Tokens
) -> None:
    gateway.reject_next()
    token = token_for(gateway)

    with pytest.raises(pymysql.err.OperationalError, match="Access denied"):
        await connect(gateway, token)
    conn = await connect(gateway, token)
    await close(conn, gateway)

    assert gateway.rejected == {"forced": 1}
    assert gateway.accepted == 1


async def test_a_client_without_tls_is_refused_and_its_leaked_token_recorded(
    gateway: IamGateway, token_for: Tokens
) -> None:
    token = token_for(gateway)

    with pytest.raises(pymysql.err.OperationalError) as refused:
        await connect(gateway, token, ssl=None)

    assert refused.value.args[0] == 3159
    assert gateway.rejected == {"not_tls": 1}
    assert gateway.saw_in_plaintext(token)
    assert gateway.accepted == 0


async def test_aiomysql_with_ssl_sends_its_token_in_clear_to_a_server_without_tls(
    token_for: Tokens, fake_aws: FakeAws
) -> None:
    # The hazard DESIGN.md section 8 describes: aiomysql 0.3.2 given ssl=ctx stays on plain TCP
    # when the server does not advertise CLIENT_SSL. The pools must refuse such a server.
    async with IamGateway("mysql", upstream=UPSTREAM, authority=fake_aws, offer_tls=False) as plain:
        token = token_for(plain)

        with pytest.raises(pymysql.err.OperationalError):
            await connect(plain, token, ssl=plain.client_ssl_context())

        assert plain.saw_in_plaintext(token)
        (seen,) = plain.secrets_seen_in_plaintext
        assert (seen.protocol, seen.user, seen.length) == ("mysql", APP, len(token))


def test_pymysql_requiring_tls_refuses_a_server_without_tls_and_sends_nothing(
    token_for: Tokens, fake_aws: FakeAws
) -> None:
    with IamGateway("mysql", upstream=UPSTREAM, authority=fake_aws, offer_tls=False) as plain:
        token = token_for(plain)

        with pytest.raises(pymysql.err.OperationalError, match="SSL"):
            pymysql.connect(
                host=plain.host,
                port=plain.port,
                user=APP,
                password=token,
                ssl={"ca": str(plain.ca_path)},
            )

        assert plain.secrets_seen_in_plaintext == ()


def test_a_client_that_does_not_trust_the_ca_aborts_before_sending_its_token(
    gateway: IamGateway, token_for: Tokens
) -> None:
    with pytest.raises(pymysql.err.OperationalError, match="CERTIFICATE_VERIFY_FAILED"):
        pymysql.connect(
            host=gateway.host,
            port=gateway.port,
            user=APP,
            password=token_for(gateway),
            ssl=ssl.create_default_context(),
        )

    gateway.wait_idle()
    assert gateway.accepted == 0
    assert gateway.rejected == {}


async def test_a_two_kilobyte_token_arrives_whole(token_for: Tokens) -> None:
    # STS session tokens vary in length; this one makes the token longer than 2 KB.
    long_key = Key("ASIALONGSESSIONKEY02", "long/secret", "Zm9v" * 500, None)
    async with IamGateway("mysql", upstream=UPSTREAM, authority=Authority(long_key)) as long_tokens:
        long_tokens.ensure_user(APP)
        token = token_for(long_tokens, key=long_key)
        assert len(token) > 2048

        for plugin in ("", "mysql_clear_password"):  # after an auth switch, and right away
            conn = await connect(long_tokens, token, auth_plugin=plugin)
            await close(conn, long_tokens)

        assert long_tokens.accepted == 2


async def test_a_client_dropping_mid_handshake_leaves_no_connection_open(
    gateway: IamGateway,
) -> None:
    async with await anyio.connect_tcp(gateway.host, gateway.port) as after_greeting:
        assert (await after_greeting.receive())[4:5] == b"\x0a"

    await wait_idle(gateway)
    assert gateway.active == 0
    assert gateway.upstream_active == 0
    assert gateway.rejected == {}


@pytest.mark.parametrize(
    "garbage",
    [
        b"\xff\xff\xff\x01" + b"x" * 64,
        b"\x28\x00\x00\x01" + b"\x00" * 40,
        b"\x10\x00\x00\x01" + b"\x00\x02\x00\x00" + b"\x00" * 12,
        b"GET / HTTP/1.1\r\nHost: db\r\n\r\n" + b"\x00" * 64,
    ],
    ids=["oversized", "pre-4.1-flags", "truncated-response", "http"],
)
async def test_malformed_packets_close_that_connection_only(
    gateway: IamGateway, garbage: bytes, token_for: Tokens
) -> None:
    async with await anyio.connect_tcp(gateway.host, gateway.port) as attacker:
        await attacker.receive()  # the greeting
        await attacker.send(garbage)
        with anyio.fail_after(10):
            await read_until_hung_up(attacker)

    conn = await connect(gateway, token_for(gateway))
    await close(conn, gateway)
    await wait_idle(gateway)
    assert gateway.rejected == {"malformed_packet": 1}
    assert gateway.accepted == 1
    assert gateway.upstream_active == 0


async def read_until_hung_up(stream: anyio.abc.ByteStream) -> None:
    try:
        while True:
            await stream.receive()
    except (anyio.EndOfStream, anyio.BrokenResourceError):
        return


async def test_a_hundred_concurrent_logins_each_reach_the_real_server(
    gateway: IamGateway, token_for: Tokens
) -> None:
    token = token_for(gateway)
    users: list[str] = []

    async def login() -> None:
        conn = await connect(gateway, token)
        try:
            users.append(await current_user(conn))
        finally:
            await conn.ensure_closed()

    with anyio.fail_after(60):
        async with anyio.create_task_group() as group:
            for _ in range(100):
                group.start_soon(login)

    assert users == [f"{APP}@%"] * 100
    assert gateway.accepted == 100
    await wait_idle(gateway)


async def test_the_iam_mysql_fixture_lets_iampool_connect_as_the_iam_user(
    iam_mysql: IamDatabase,
) -> None:
    gateway = iam_mysql.gateway
    gateway.reset_counters()

    conn = await iampool.connect(iam_mysql.dsn, aws_iam=iam_mysql.config)
    try:
        assert await current_user(conn) == f"{iam_mysql.user}@%"
    finally:
        await close(conn, gateway)

    assert gateway.accepted == 1
    assert gateway.rejected == {}


# -- login users: created when missing, dropped by whoever created them --------------------------


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def admin_query(sql: str, *args: object) -> tuple[tuple[Any, ...], ...]:
    upstream = urlsplit(UPSTREAM)
    with (
        pymysql.connect(
            host=upstream.hostname,
            port=upstream.port or 3306,
            user=upstream.username or "root",
            password=upstream.password or "",
        ) as conn,
        conn.cursor() as cursor,
    ):
        cursor.execute(sql, args or None)
        rows: tuple[tuple[Any, ...], ...] = cursor.fetchall()
    return rows


def user_exists(name: str) -> bool:
    return bool(admin_query("SELECT 1 FROM mysql.user WHERE User = %s AND Host = '%%'", name))


async def test_the_plugin_drops_the_login_user_it_created_when_the_session_ends(
    fake_aws: FakeAws, token_for: Tokens
) -> None:
    login = unique("session_login")

    with plugin._gateway(
        "mysql", "IAMPOOL_TEST_MYSQL_DSN", plugin.DEFAULT_MYSQL_DSN, fake_aws, "rds"
    ) as gateway:
        database = plugin._rds_database(
            gateway, fake_aws, login=login, role_name="iampool-test-cleanup"
        )
        conn = await connect(gateway, token_for(gateway, login), user=database.user)
        assert await current_user(conn) == f"{login}@%"
        await close(conn, gateway)
        assert gateway.created_users == (login,)

    assert not user_exists(login)


async def test_the_plugin_leaves_a_login_user_that_existed_before_the_session(
    fake_aws: FakeAws,
) -> None:
    login = unique("their_login")
    admin_query(f"CREATE USER '{login}'@'%'")
    try:
        with plugin._gateway(
            "mysql", "IAMPOOL_TEST_MYSQL_DSN", plugin.DEFAULT_MYSQL_DSN, fake_aws, "rds"
        ) as gateway:
            plugin._rds_database(gateway, fake_aws, login=login, role_name="iampool-test-cleanup")
            assert gateway.created_users == ()

        assert user_exists(login)
    finally:
        admin_query(f"DROP USER IF EXISTS '{login}'@'%'")


async def test_the_anonymous_account_probe_runs_on_the_real_server() -> None:
    # No anonymous account here: the probe succeeds without rows. The same statement over rows
    # that do exist (the admin's own account) fails as it does when anonymous accounts exist.
    upstream = Upstream.from_dsn(
        os.environ.get(plugin.MYSQL_DSN_VARIABLE) or plugin.DEFAULT_MYSQL_DSN
    )
    probe = _users._MYSQL_ANONYMOUS_PROBE
    over_the_admin = probe.replace("user = '' AND host <> '%'", f"user = '{upstream.user}'")
    assert over_the_admin != probe

    states = await run_admin_statements(upstream, [probe, over_the_admin])

    assert states == ["", _users._MYSQL_SEVERAL_ROWS]
