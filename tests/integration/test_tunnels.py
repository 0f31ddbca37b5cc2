"""Connecting through a tunnel: dial one address, sign for and verify TLS against the endpoint.

The IAM gateways here stand for RDS endpoints by name (``server_name``): their certificates carry
that name only, and they accept tokens signed for it (and the server's port), as RDS does. A
plain TCP forwarder, written below, plays the SSH tunnel or port-forward: the DSN names the
forwarder's 127.0.0.1 port, and ``?iam_host=`` the endpoint. The blocks leave ``region`` out: it
comes from the endpoint's name.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import pytest

import iampool
from iampool import AuthTokenRejected, ConfigError, CredentialCache
from iampool.testing import FakeAws, IamGateway
from tests.users import APP

pytestmark = pytest.mark.anyio

PG_NAME = "db.cluster-abc123xyz.us-east-1.rds.amazonaws.com"
MYSQL_NAME = "shop.cluster-abc123xyz.us-east-1.rds.amazonaws.com"
OTHER_NAME = "db.cluster-def456uvw.us-east-1.rds.amazonaws.com"  # same region, another cluster
USER = APP
UPSTREAMS = {
    "postgresql": os.environ.get(
        "IAMPOOL_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
    ),
    "mysql": os.environ.get("IAMPOOL_TEST_MYSQL_DSN", "mysql://root@127.0.0.1:3306/test"),
}
SCHEMES = ["postgresql+asyncpg", "postgresql+psycopg", "mysql+aiomysql", "mysql+asyncmy"]


class Forwarder:
    """A plain TCP forwarder (the tunnel): every connection to 127.0.0.1:``port`` is piped,
    byte for byte, to ``target``. It sees TLS only as opaque bytes."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.connections = 0

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        async with listener:
            self.port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 (anyio)
            task_status.started()
            await listener.serve(self._pipe)

    async def _pipe(self, client: anyio.abc.SocketStream) -> None:
        self.connections += 1
        async with (
            client,
            await anyio.connect_tcp(*self.target) as upstream,
            anyio.create_task_group() as group,
        ):
            group.start_soon(_copy, client, upstream)
            group.start_soon(_copy, upstream, client)


async def _copy(source: anyio.abc.SocketStream, sink: anyio.abc.SocketStream) -> None:
    try:
        async for chunk in source:
            await sink.send(chunk)
        await sink.send_eof()
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        pass


@asynccontextmanager
async def tunnel_to(gateway: IamGateway) -> AsyncIterator[Forwarder]:
    forwarder = Forwarder((gateway.host, gateway.port))
    async with anyio.create_task_group() as group:
        await group.start(forwarder.serve)
        try:
            yield forwarder
        finally:
            group.cancel_scope.cancel()


@dataclass(frozen=True)
class Endpoint:
    gateway: IamGateway
    name: str
    database: str
    block: dict[str, Any]


@pytest.fixture(scope="module")
def role_arn(fake_aws: FakeAws) -> str:
    return fake_aws.create_role("iampool-test-tunnels")


def _endpoint(
    protocol: str, name: str, port: int, fake_aws: FakeAws, role_arn: str
) -> Iterator[Endpoint]:
    gateway = IamGateway(
        protocol,  # type: ignore[arg-type]
        upstream=UPSTREAMS[protocol],
        authority=fake_aws,
        region="us-east-1",
        server_name=name,
        server_port=port,
    )
    with gateway:
        gateway.ensure_user(USER)
        try:
            block = {"enabled": True, "role_arn": role_arn, "db_username": USER}  # no region
            yield Endpoint(gateway, name, gateway.upstream.database or "", block)
        finally:
            gateway.drop_created_users()


@pytest.fixture(scope="module")
def rds_postgres(fake_aws: FakeAws, role_arn: str) -> Iterator[Endpoint]:
    yield from _endpoint("postgresql", PG_NAME, 5432, fake_aws, role_arn)


@pytest.fixture(scope="module")
def rds_mysql(fake_aws: FakeAws, role_arn: str) -> Iterator[Endpoint]:
    yield from _endpoint("mysql", MYSQL_NAME, 3306, fake_aws, role_arn)


@pytest.fixture
def endpoint_for(rds_postgres: Endpoint, rds_mysql: Endpoint) -> Any:
    def endpoint_for(scheme: str) -> Endpoint:
        endpoint = rds_postgres if scheme.startswith("postgresql") else rds_mysql
        endpoint.gateway.reset_counters()
        return endpoint

    return endpoint_for


@pytest.fixture
async def cache() -> AsyncIterator[CredentialCache]:
    cache = CredentialCache()
    yield cache
    await cache.aclose()


def tunnel_dsn(
    scheme: str, endpoint: Endpoint, forwarder: Forwarder, host: str = "127.0.0.1", **query: str
) -> str:
    parameters = {"sslmode": "verify-full", "sslrootcert": str(endpoint.gateway.ca_path), **query}
    encoded = "&".join(f"{name}={value}" for name, value in parameters.items())
    return f"{scheme}://{USER}@{host}:{forwarder.port}/{endpoint.database}?{encoded}"


async def current_user(scheme: str, connection: Any) -> str:
    if scheme == "postgresql+asyncpg":
        return str(await connection.fetchval("SELECT current_user"))
    if scheme == "postgresql+psycopg":
        cursor = await connection.execute("SELECT current_user")
        return str((await cursor.fetchone())[0])
    async with connection.cursor() as cursor:
        await cursor.execute("SELECT CURRENT_USER()")
        (user,) = await cursor.fetchone()
    return str(user).split("@", 1)[0]  # MariaDB answers 'app@%'


async def close(scheme: str, connection: Any) -> None:
    if scheme == "postgresql+asyncpg" or scheme == "postgresql+psycopg":
        await connection.close()
    elif scheme == "mysql+aiomysql":
        connection.close()
    else:
        await connection.ensure_closed()


def refused_certificate(error: BaseException | None, name: str) -> bool:
    """Whether a driver's error is (or was caused by) a certificate not valid for ``name``:
    aiomysql reports one as "Can't connect to MySQL server", its cause the
    ``SSLCertVerificationError``; psycopg in libpq's words."""
    while error is not None:
        if isinstance(error, ssl.SSLCertVerificationError) and f"not valid for '{name}'" in str(
            error
        ):
            return True
        if f'does not match host name "{name}"' in str(error):  # libpq
            return True
        error = error.__cause__ or error.__context__
    return False


async def connect_and_close(scheme: str, dsn: str, block: dict[str, Any], cache: Any) -> None:
    connection = await iampool.connect(dsn, aws_iam=block, cache=cache)
    await close(scheme, connection)


async def wait_idle(gateway: IamGateway) -> None:
    await anyio.to_thread.run_sync(gateway.wait_idle)


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_verify_full_through_a_tunnel_signs_and_verifies_for_iam_host(
    scheme: str, endpoint_for: Any, cache: CredentialCache
) -> None:
    endpoint = endpoint_for(scheme)

    async with tunnel_to(endpoint.gateway) as forwarder:
        dsn = tunnel_dsn(scheme, endpoint, forwarder, iam_host=endpoint.name)
        connection = await iampool.connect(dsn, aws_iam=endpoint.block, cache=cache)
        try:
            user = await current_user(scheme, connection)
        finally:
            await close(scheme, connection)

    assert user == USER
    assert forwarder.connections >= 1  # the login went through the tunnel
    assert endpoint.gateway.accepted == 1  # a token signed for <name>:<server port>
    assert endpoint.gateway.rejected == {}
    assert cache.stats()["tokens_signed"] == 1


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_a_tunnel_dialled_by_name_is_resolved_and_still_verified_for_iam_host(
    scheme: str, endpoint_for: Any, cache: CredentialCache
) -> None:
    # psycopg: libpq dials numeric addresses only (hostaddr); iampool resolves "localhost" (to
    # ::1 and 127.0.0.1 where both exist: the forwarder listens on the second only).
    endpoint = endpoint_for(scheme)

    async with tunnel_to(endpoint.gateway) as forwarder:
        dsn = tunnel_dsn(scheme, endpoint, forwarder, host="localhost", iam_host=endpoint.name)
        connection = await iampool.connect(dsn, aws_iam=endpoint.block, cache=cache)
        try:
            user = await current_user(scheme, connection)
        finally:
            await close(scheme, connection)

    assert user == USER
    assert endpoint.gateway.accepted == 1


@pytest.mark.parametrize("scheme", ["postgresql+asyncpg", "mysql+aiomysql"])
async def test_a_pool_through_a_tunnel_shares_one_token_for_the_endpoint(
    scheme: str, endpoint_for: Any, cache: CredentialCache
) -> None:
    endpoint = endpoint_for(scheme)

    async with tunnel_to(endpoint.gateway) as forwarder:
        dsn = tunnel_dsn(scheme, endpoint, forwarder, iam_host=endpoint.name)
        pool = await iampool.create_pool(
            dsn, aws_iam=endpoint.block, min_size=3, max_size=3, cache=cache
        )
        try:
            async with pool.acquire() as connection:
                user = await current_user(scheme, connection)
        finally:
            pool.terminate() if scheme == "mysql+aiomysql" else await pool.close()
            if scheme == "mysql+aiomysql":
                await pool.wait_closed()

    assert user == USER
    assert forwarder.connections == 3
    assert endpoint.gateway.accepted == 3
    assert cache.stats()["tokens_signed"] == 1


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize(
    "query",
    [
        pytest.param({"iam_host": OTHER_NAME}, id="another endpoint"),
        pytest.param({"iam_host": "{name}.attacker.example"}, id="a lookalike"),
        pytest.param({"iam_host": "x{name}"}, id="another first label"),
    ],
)
async def test_verify_full_fails_when_iam_host_is_not_the_certificates_name(
    scheme: str, query: dict[str, str], endpoint_for: Any, cache: CredentialCache
) -> None:
    endpoint = endpoint_for(scheme)

    async with tunnel_to(endpoint.gateway) as forwarder:
        named = {key: value.format(name=endpoint.name) for key, value in query.items()}
        dsn = tunnel_dsn(scheme, endpoint, forwarder, **named)
        block = {**endpoint.block, "region": "us-east-1"}  # a lookalike names no region
        with pytest.raises(Exception) as caught:  # noqa: PT011 (each driver raises its own kind)
            await connect_and_close(scheme, dsn, block, cache)

    assert refused_certificate(caught.value, named["iam_host"])
    assert forwarder.connections >= 1
    await wait_idle(endpoint.gateway)
    assert endpoint.gateway.accepted == 0
    assert endpoint.gateway.rejected == {}  # the client stopped before sending any token


async def test_without_iam_host_verify_full_through_a_tunnel_fails_on_the_name(
    rds_postgres: Endpoint, cache: CredentialCache
) -> None:
    rds_postgres.gateway.reset_counters()
    block = {**rds_postgres.block, "region": "us-east-1"}  # 127.0.0.1 names no region

    async with tunnel_to(rds_postgres.gateway) as forwarder:
        dsn = tunnel_dsn("postgresql", rds_postgres, forwarder)
        with pytest.raises(ssl.SSLCertVerificationError) as caught:
            await iampool.connect(dsn, aws_iam=block, cache=cache)

    assert refused_certificate(caught.value, "127.0.0.1")

    await wait_idle(rds_postgres.gateway)
    assert rds_postgres.gateway.accepted == 0


async def test_a_token_signed_for_the_tunnels_address_is_refused_by_the_endpoint(
    rds_postgres: Endpoint, cache: CredentialCache
) -> None:
    rds_postgres.gateway.reset_counters()
    block = {**rds_postgres.block, "region": "us-east-1"}

    async with tunnel_to(rds_postgres.gateway) as forwarder:
        dsn = f"postgresql://{USER}@127.0.0.1:{forwarder.port}/{rds_postgres.database}"
        with pytest.raises(AuthTokenRejected):  # sslmode=require: TLS passes, the token not
            await iampool.connect(dsn, aws_iam=block, cache=cache)

    assert rds_postgres.gateway.rejected["wrong_endpoint"] == 2  # the first and the retry


async def test_a_region_that_disagrees_with_iam_host_fails_before_dialling(
    rds_postgres: Endpoint, cache: CredentialCache
) -> None:
    block = {**rds_postgres.block, "region": "eu-west-1"}

    async with tunnel_to(rds_postgres.gateway) as forwarder:
        dsn = tunnel_dsn("postgresql", rds_postgres, forwarder, iam_host=PG_NAME)
        with pytest.raises(ConfigError) as caught:
            await iampool.connect(dsn, aws_iam=block, cache=cache)

    assert caught.value.fields == ["region"]
    assert "'eu-west-1'" in str(caught.value)
    assert "'us-east-1'" in str(caught.value)
    assert forwarder.connections == 0
    assert cache.stats()["sts_calls"] == 0


async def test_iampool_check_through_a_tunnel_reads_the_region_from_iam_host(
    rds_postgres: Endpoint,
) -> None:
    rds_postgres.gateway.reset_counters()

    async with tunnel_to(rds_postgres.gateway) as forwarder:
        dsn = tunnel_dsn("postgresql", rds_postgres, forwarder, iam_host=PG_NAME)
        extra = json.dumps(rds_postgres.block)
        command = [sys.executable, "-m", "iampool", "check", dsn, "--extra", extra]
        result = await anyio.run_process(command, check=False)

    output = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0, output
    assert "AWS credentials" in output
    assert "X-Amz-Signature" not in output
    assert rds_postgres.gateway.accepted >= 1
    assert forwarder.connections >= 1


async def test_an_aurora_dsql_token_through_a_tunnel_is_signed_for_iam_host(
    fake_aws: FakeAws, role_arn: str, cache: CredentialCache
) -> None:
    name = "abcdefghijklmnopqrst12345.dsql.us-east-1.on.aws"
    gateway = IamGateway(
        "postgresql",
        upstream=UPSTREAMS["postgresql"],
        authority=fake_aws,
        region="us-east-1",
        mode="dsql",
        server_name=name,
    )
    block = {"enabled": True, "dsql": True, "role_arn": role_arn, "db_username": "admin"}
    with gateway:
        gateway.ensure_user("admin", keep=True)
        try:
            async with tunnel_to(gateway) as forwarder:
                database = gateway.upstream.database or ""
                dsn = (
                    f"postgresql://admin@127.0.0.1:{forwarder.port}/{database}"
                    f"?sslrootcert={gateway.ca_path}&iam_host={name}"  # verify-full: DSQL's default
                )
                connection = await iampool.connect(dsn, aws_iam=block, cache=cache)
                try:
                    user = await connection.fetchval("SELECT current_user")
                finally:
                    await connection.close()
        finally:
            gateway.drop_created_users()

    assert user == "admin"
    assert gateway.accepted == 1
    assert forwarder.connections == 1
