"""IamGateway in front of the real PostgreSQL 15, driven by plain asyncpg clients.

Tokens come from botocore's own ``generate_db_auth_token`` with keys the AWS stand-in issued.
"""

from __future__ import annotations

import os
import socket
import ssl
import struct
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import anyio
import asyncpg
import pytest
from anyio.streams.tls import TLSStream

import iampool
from iampool.testing import FakeAws, IamDatabase, IamGateway, plugin
from tests.users import APP, OTHER

from .rds_tokens import (
    NEVER_ISSUED,
    Authority,
    Key,
    Tokens,
    assumed_role_tokens,
)

pytestmark = pytest.mark.anyio

UPSTREAM = os.environ.get("IAMPOOL_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="module")
def token_for(fake_aws: FakeAws) -> Tokens:
    """Tokens signed with temporary credentials from AssumeRole on the fake AWS."""
    return assumed_role_tokens(fake_aws, "gateway-test-postgres")


@pytest.fixture(scope="module")
def gateway(fake_aws: FakeAws) -> Iterator[IamGateway]:
    with IamGateway("postgresql", upstream=UPSTREAM, authority=fake_aws) as gateway:
        gateway.ensure_user(APP)
        gateway.ensure_user(OTHER)
        yield gateway
        gateway.drop_created_users()


@pytest.fixture(autouse=True)
def fresh_counters(gateway: IamGateway) -> None:
    gateway.reset_counters()


async def connect(gateway: IamGateway, password: str, **kwargs: object) -> asyncpg.Connection:
    options: dict[str, object] = {
        "host": gateway.host,
        "port": gateway.port,
        "user": APP,
        "database": "postgres",
        "ssl": gateway.client_ssl_context(),
    }
    options.update(kwargs)
    return await asyncpg.connect(password=password, **options)


async def read_until_hung_up(stream: anyio.abc.ByteStream) -> None:
    try:
        while True:
            await stream.receive()
    except (anyio.EndOfStream, anyio.BrokenResourceError):
        return


async def wait_idle(gateway: IamGateway) -> None:
    await anyio.to_thread.run_sync(gateway.wait_idle)


async def test_a_valid_token_logs_in_to_the_real_server_as_the_iam_user(
    gateway: IamGateway, token_for: Tokens
) -> None:
    conn = await connect(gateway, token_for(gateway))
    try:
        assert await conn.fetchval("SELECT current_user") == APP
        assert await conn.fetchval("SELECT $1::int + 1", 41) == 42
    finally:
        await conn.close()

    assert gateway.accepted == 1
    assert gateway.rejected == {}


async def test_the_gateway_dsn_verifies_the_certificate_by_name_against_ca_path(
    gateway: IamGateway, token_for: Tokens
) -> None:
    dsn = gateway.dsn(APP)
    assert "sslmode=verify-full" in dsn

    conn = await asyncpg.connect(dsn, password=token_for(gateway))
    try:
        assert await conn.fetchval("SELECT current_user") == APP
    finally:
        await conn.close()


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1"])
def test_the_certificate_names_localhost_and_the_loopback_address(
    gateway: IamGateway, name: str
) -> None:
    context = ssl.create_default_context(cafile=str(gateway.ca_path))

    with socket.create_connection((gateway.host, gateway.port)) as raw:
        raw.sendall(struct.pack("!ii", 8, 80877103))
        assert raw.recv(1) == b"S"
        with context.wrap_socket(raw, server_hostname=name) as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")


async def test_a_client_that_does_not_trust_the_ca_aborts_before_sending_its_token(
    gateway: IamGateway, token_for: Tokens
) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        await connect(gateway, token_for(gateway), ssl=ssl.create_default_context())

    await wait_idle(gateway)
    assert gateway.accepted == 0
    assert gateway.rejected == {}


@pytest.mark.parametrize(
    ("variant", "reason"),
    [
        ("forged signature", "bad_signature"),
        ("token for another user", "wrong_user"),
        ("token for another host", "wrong_endpoint"),
        ("token for another port", "wrong_endpoint"),
        ("token for another region", "wrong_region"),
        ("temporary key without its session token", "no_session_token"),
        ("key the authority never issued", "unknown_key"),
        ("not a token at all", "malformed_token"),
    ],
)
async def test_an_invalid_token_is_refused_like_rds_does(
    gateway: IamGateway, variant: str, reason: str, token_for: Tokens
) -> None:
    token = {
        "forged signature": lambda: token_for(gateway)[:-4] + "beef",
        "token for another user": lambda: token_for(gateway, OTHER),
        "token for another host": lambda: token_for(gateway, host="localhost"),
        "token for another port": lambda: token_for(gateway, port=gateway.port + 1),
        "token for another region": lambda: token_for(gateway, region="eu-west-1"),
        "temporary key without its session token": lambda: token_for(
            gateway, without_session_token=True
        ),
        "key the authority never issued": lambda: token_for(gateway, key=NEVER_ISSUED),
        "not a token at all": lambda: "hunter2",
    }[variant]()

    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError) as refused:
        await connect(gateway, token)

    assert refused.value.sqlstate == "28000"
    assert str(refused.value) == f'PAM authentication failed for user "{APP}"'
    assert gateway.rejected == {reason: 1}
    assert gateway.accepted == 0
    await wait_idle(gateway)
    assert gateway.upstream_active == 0


async def test_an_expired_token_is_refused(token_for: Tokens, fake_aws: FakeAws) -> None:
    later = lambda: datetime.now(timezone.utc) + timedelta(minutes=16)  # noqa: E731
    async with IamGateway(
        "postgresql", upstream=UPSTREAM, authority=fake_aws, clock=later
    ) as shifted:
        with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
            await connect(shifted, token_for(shifted))

        assert shifted.rejected == {"expired": 1}


@pytest.mark.parametrize("minutes_ago", [20, 30])
async def test_a_token_signed_long_ago_for_an_hour_is_refused_after_rds_15_minutes(
    gateway: IamGateway, token_for: Tokens, minutes_ago: int
) -> None:
    signed = datetime.now(timezone.utc) - timedelta(minutes=minutes_ago)
    token = token_for(gateway, expires_in=3600, signed_at=signed)
    assert "&X-Amz-Expires=3600&" in token  # still valid by its own word

    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError) as refused:
        await connect(gateway, token)

    assert str(refused.value) == f'PAM authentication failed for user "{APP}"'
    assert gateway.rejected == {"expired": 1}
    assert gateway.accepted == 0
    await wait_idle(gateway)


async def test_a_token_signed_14_minutes_ago_for_an_hour_still_logs_in(
    gateway: IamGateway, token_for: Tokens
) -> None:
    signed = datetime.now(timezone.utc) - timedelta(minutes=14)
    token = token_for(gateway, expires_in=3600, signed_at=signed)

    conn = await connect(gateway, token)
    await conn.close()

    assert gateway.accepted == 1
    assert gateway.rejected == {}


async def test_a_two_kilobyte_token_arrives_whole(gateway: IamGateway, token_for: Tokens) -> None:
    # STS session tokens vary in length; this one makes the token longer than 2 KB.
    long_key = Key("ASIALONGSESSIONKEY01", "long/secret", "Zm9v" * 500, None)
    async with IamGateway(
        "postgresql", upstream=UPSTREAM, authority=Authority(long_key)
    ) as long_tokens:
        token = token_for(long_tokens, key=long_key)
        assert len(token) > 2048

        conn = await connect(long_tokens, token)
        await conn.close()

        assert long_tokens.accepted == 1


async def test_a_client_without_tls_is_refused_before_it_sends_a_password(
    gateway: IamGateway, token_for: Tokens
) -> None:
    token = token_for(gateway)

    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError, match="no encryption"):
        await connect(gateway, token, ssl=False)

    assert gateway.rejected == {"not_tls": 1}
    assert gateway.secrets_seen_in_plaintext == ()


async def test_a_server_without_tls_never_receives_a_token_from_a_client_requiring_tls(
    token_for: Tokens, fake_aws: FakeAws
) -> None:
    async with IamGateway(
        "postgresql", upstream=UPSTREAM, authority=fake_aws, offer_tls=False
    ) as plain:
        token = token_for(plain)
        context = ssl.create_default_context()

        with pytest.raises(ConnectionError, match="rejected SSL upgrade"):
            await connect(plain, token, ssl=context)
        with pytest.raises(ConnectionError, match="rejected SSL upgrade"):
            await connect(plain, token, ssl="require")

        assert plain.secrets_seen_in_plaintext == ()
        assert not plain.saw_in_plaintext(token)


async def test_a_server_without_tls_captures_the_token_of_a_client_that_falls_back(
    token_for: Tokens, fake_aws: FakeAws
) -> None:
    async with IamGateway(
        "postgresql", upstream=UPSTREAM, authority=fake_aws, offer_tls=False
    ) as plain:
        token = token_for(plain)

        with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
            await connect(plain, token, ssl="prefer")

        assert plain.saw_in_plaintext(token)
        (seen,) = plain.secrets_seen_in_plaintext
        assert (seen.user, seen.length) == (APP, len(token))
        assert token not in repr(seen)
        assert plain.rejected == {"not_tls": 1}


async def test_reject_next_refuses_that_many_valid_logins_then_lets_them_in(
    gateway: IamGateway, token_for: Tokens
) -> None:
    gateway.reject_next(2)
    token = token_for(gateway)

    for _ in range(2):
        with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
            await connect(gateway, token)
    conn = await connect(gateway, token)
    await conn.close()

    assert gateway.rejected == {"forced": 2}
    assert gateway.accepted == 1


async def test_a_client_dropping_mid_handshake_leaves_no_connection_open(
    gateway: IamGateway,
) -> None:
    startup = struct.pack("!i", 196608) + b"user\0app\0database\0postgres\0\0"
    async with await anyio.connect_tcp(gateway.host, gateway.port) as after_ssl_request:
        await after_ssl_request.send(struct.pack("!ii", 8, 80877103))
        assert await after_ssl_request.receive(1) == b"S"
    stream = await anyio.connect_tcp(gateway.host, gateway.port)
    await stream.send(struct.pack("!ii", 8, 80877103))
    assert await stream.receive(1) == b"S"
    async with await TLSStream.wrap(
        stream,
        hostname="127.0.0.1",
        ssl_context=gateway.client_ssl_context(),
        standard_compatible=False,
    ) as before_password:
        await before_password.send(struct.pack("!i", len(startup) + 4) + startup)
        assert await before_password.receive() == b"R" + struct.pack("!ii", 8, 3)

    await wait_idle(gateway)
    assert gateway.active == 0
    assert gateway.upstream_active == 0
    assert gateway.accepted == 0


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: db\r\n\r\n",
        struct.pack("!ii", 8, 12345678),
        struct.pack("!ii", 12, 196608) + b"\xff\xfe\0\0",
        struct.pack("!i", 196608 + 8) + b"\0" * 4,
    ],
    ids=["http", "unknown-code", "bad-parameters", "oversized"],
)
async def test_malformed_packets_close_that_connection_only(
    gateway: IamGateway, garbage: bytes, token_for: Tokens
) -> None:
    async with await anyio.connect_tcp(gateway.host, gateway.port) as attacker:
        await attacker.send(garbage)
        with anyio.fail_after(10):
            await read_until_hung_up(attacker)

    conn = await connect(gateway, token_for(gateway))
    await conn.close()
    await wait_idle(gateway)
    assert gateway.rejected == {"malformed_packet": 1}
    assert gateway.accepted == 1


async def test_five_hundred_concurrent_tls_logins_are_all_answered(
    gateway: IamGateway, token_for: Tokens
) -> None:
    token = token_for(gateway)
    gateway.reject_next(500)  # verified, then refused: the upstream's 100 slots stay free
    outcomes: list[str] = []

    async def refused_login() -> None:
        try:
            await connect(gateway, token, timeout=60)
        except asyncpg.InvalidAuthorizationSpecificationError:
            outcomes.append("refused")

    with anyio.fail_after(60):
        async with anyio.create_task_group() as group:
            for _ in range(500):
                group.start_soon(refused_login)

    assert outcomes == ["refused"] * 500
    assert gateway.rejected == {"forced": 500}
    await wait_idle(gateway)  # every client has finished its TLS shutdown


async def test_sixty_concurrent_logins_each_reach_the_real_server(
    gateway: IamGateway, token_for: Tokens
) -> None:
    token = token_for(gateway)
    users: list[str] = []

    async def login() -> None:
        conn = await connect(gateway, token)
        try:
            users.append(await conn.fetchval("SELECT current_user"))
        finally:
            await conn.close()

    async with anyio.create_task_group() as group:
        for _ in range(60):
            group.start_soon(login)

    assert users == [APP] * 60
    assert gateway.accepted == 60
    await wait_idle(gateway)


async def test_a_cancel_request_reaches_the_upstream(
    gateway: IamGateway, token_for: Tokens
) -> None:
    conn = await connect(gateway, token_for(gateway))
    try:
        with pytest.raises(TimeoutError):
            await conn.fetchval("SELECT pg_sleep(30)", timeout=0.2)
        with anyio.fail_after(10):  # without the cancel, the sleep would hold the session
            assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()


async def test_ensure_user_quotes_names_and_is_idempotent(
    gateway: IamGateway, token_for: Tokens
) -> None:
    name = 'IAM:we"ird user'
    gateway.ensure_user(name)
    gateway.ensure_user(name)

    conn = await connect(gateway, token_for(gateway, name), user=name)
    try:
        assert await conn.fetchval("SELECT current_user") == name
    finally:
        await conn.close()


def test_a_gateway_whose_upstream_does_not_answer_fails_to_start_saying_where(
    fake_aws: FakeAws,
) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    gateway = IamGateway(
        "postgresql",
        upstream=f"postgresql://postgres:s3cret@127.0.0.1:{port}/postgres",
        authority=fake_aws,
    )

    with pytest.raises(ConnectionError, match=f"127.0.0.1:{port} does not answer") as failed:
        gateway.start()

    assert "s3cret" not in str(failed.value)
    assert "s3cret" not in repr(gateway)


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_a_gateway_started_from_trio_serves_a_tls_handshake(fake_aws: FakeAws) -> None:
    async with IamGateway("postgresql", upstream=UPSTREAM, authority=fake_aws) as gateway:
        stream = await anyio.connect_tcp(gateway.host, gateway.port)
        await stream.send(struct.pack("!ii", 8, 80877103))
        assert await stream.receive(1) == b"S"
        tls = await TLSStream.wrap(
            stream,
            hostname="localhost",
            ssl_context=gateway.client_ssl_context(),
            standard_compatible=False,
        )
        await tls.aclose()
        await anyio.to_thread.run_sync(gateway.wait_idle)

        assert gateway.active == 0


async def test_the_iam_postgres_fixture_lets_iampool_connect_as_the_iam_user(
    iam_postgres: IamDatabase,
) -> None:
    gateway = iam_postgres.gateway
    gateway.reset_counters()

    conn = await iampool.connect(iam_postgres.dsn, aws_iam=iam_postgres.config)
    try:
        assert await conn.fetchval("SELECT current_user") == iam_postgres.user
    finally:
        await conn.close()

    assert gateway.accepted == 1
    assert gateway.rejected == {}
    assert iam_postgres.ca_path == gateway.ca_path
    assert "sslrootcert=" in iam_postgres.dsn


def test_the_plugin_fails_with_how_to_start_a_server_that_does_not_answer(
    fake_aws: FakeAws, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    monkeypatch.setenv("IAMPOOL_TEST_PG_DSN", f"postgresql://postgres@127.0.0.1:{port}/postgres")
    starting = plugin._gateway(
        "postgresql", "IAMPOOL_TEST_PG_DSN", plugin.DEFAULT_PG_DSN, fake_aws, "rds"
    )

    with pytest.raises(pytest.fail.Exception) as failed, starting:
        pass

    assert f"127.0.0.1:{port} does not answer" in str(failed.value)
    assert "pg_ctlcluster" in str(failed.value)
    assert "IAMPOOL_TEST_PG_DSN" in str(failed.value)


# -- login users: created when missing, dropped by whoever created them --------------------------


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


async def role_exists(name: str) -> bool:
    conn = await asyncpg.connect(UPSTREAM)
    try:
        return bool(await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name))
    finally:
        await conn.close()


async def test_drop_created_users_drops_the_users_the_gateway_created(fake_aws: FakeAws) -> None:
    name = unique("made_here")
    async with IamGateway("postgresql", upstream=UPSTREAM, authority=fake_aws) as gateway:
        assert gateway.ensure_user(name) is True
        assert gateway.ensure_user(name) is False  # it exists now
        assert gateway.created_users == (name,)
        assert await role_exists(name)

        await anyio.to_thread.run_sync(gateway.drop_created_users)

        assert gateway.created_users == ()
    assert not await role_exists(name)


async def test_drop_created_users_leaves_a_user_that_existed_before(fake_aws: FakeAws) -> None:
    name = unique("preexisting")
    admin = await asyncpg.connect(UPSTREAM)
    try:
        await admin.execute(f'CREATE ROLE "{name}" LOGIN')
        async with IamGateway("postgresql", upstream=UPSTREAM, authority=fake_aws) as gateway:
            assert gateway.ensure_user(name) is False
            await anyio.to_thread.run_sync(gateway.drop_created_users)

        assert gateway.created_users == ()
        assert await role_exists(name)
    finally:
        await admin.execute(f'DROP OWNED BY "{name}"')
        await admin.execute(f'DROP ROLE "{name}"')
        await admin.close()


async def test_a_user_two_gateways_rely_on_is_dropped_by_the_last_one_done(
    fake_aws: FakeAws,
) -> None:
    name = unique("shared")
    async with (
        IamGateway("postgresql", upstream=UPSTREAM, authority=fake_aws) as first,
        IamGateway("postgresql", upstream=UPSTREAM, authority=fake_aws) as second,
    ):
        assert first.ensure_user(name) is True
        assert second.ensure_user(name) is False

        await anyio.to_thread.run_sync(first.drop_created_users)
        assert await role_exists(name)  # the second gateway still relies on it

        await anyio.to_thread.run_sync(second.drop_created_users)
        assert not await role_exists(name)


async def test_the_plugin_drops_the_login_user_it_created_when_the_session_ends(
    fake_aws: FakeAws, token_for: Tokens
) -> None:
    login = unique("session_login")

    with plugin._gateway(
        "postgresql", "IAMPOOL_TEST_PG_DSN", plugin.DEFAULT_PG_DSN, fake_aws, "rds"
    ) as gateway:
        database = plugin._rds_database(
            gateway, fake_aws, login=login, role_name="iampool-test-cleanup"
        )
        conn = await connect(gateway, token_for(gateway, login), user=database.user)
        await conn.close()
        assert await role_exists(login)

    assert not await role_exists(login)


async def test_the_plugin_leaves_a_login_user_that_existed_before_the_session(
    fake_aws: FakeAws,
) -> None:
    login = unique("their_login")
    admin = await asyncpg.connect(UPSTREAM)
    try:
        await admin.execute(f'CREATE ROLE "{login}" LOGIN')
        with plugin._gateway(
            "postgresql", "IAMPOOL_TEST_PG_DSN", plugin.DEFAULT_PG_DSN, fake_aws, "rds"
        ) as gateway:
            plugin._rds_database(gateway, fake_aws, login=login, role_name="iampool-test-cleanup")

        assert await role_exists(login)
    finally:
        await admin.execute(f'DROP OWNED BY "{login}"')
        await admin.execute(f'DROP ROLE "{login}"')
        await admin.close()
