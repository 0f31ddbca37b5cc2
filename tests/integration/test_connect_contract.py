"""Issue 20, the connect contract against real sockets (black box: public API only).

1. Bounded logins: ``connect_timeout`` (keyword, ``?connect_timeout=``, asyncpg's ``timeout=``)
   bounds one whole login (TCP, TLS, authentication) of every driver, against a loopback
   listener that accepts and never sends a byte and (PostgreSQL protocol) one that answers the
   SSLRequest with ``S`` and then stalls: ``iampool.LoginTimeoutError``, naming the endpoint
   and ``connect_timeout``, after one attempt.
2. Bounded close: a pool whose logins are stuck and whose acquires were cancelled closes
   within ``connect_timeout`` plus a margin, leaving no ``iampool-redshift-*`` thread behind.
3. The environment cannot move a token: libpq's ``PG*`` variables set to hostile values never
   get a token onto a recording listener (a PostgreSQL look-alike speaking TLS that asks for a
   clear-text password and keeps every byte), and a normal login through the IAM gateway still
   works with every one of them set.
4. Error text: a server's refusal with a newline and an ANSI escape is escaped in iampool's log
   records and in ``AuthTokenRejected``.

Every test is guarded by ``anyio.fail_after`` so that code without the bound fails instead of
hanging (a bound, not a timing assertion). Each test failed on the connect path
before the rewrite (9af94da), where it was marked ``xfail(strict=True)``; the marks went when
the rewrite landed.
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.to_thread
import pytest
import trustme

import iampool
from iampool import AuthTokenRejected, AwsIamConfig, CredentialCache, LoginTimeoutError, auth_for
from iampool.testing import FakeAws, IamDatabase
from tests.users import APP

from ..unit.test_connect_contract import SCHEMES
from .test_fuzz_gateway import receive_exactly

pytestmark = pytest.mark.anyio

GUARD = 15.0  # seconds any one login test may take before it counts as a hang
CONNECT_TIMEOUT = 1
CLOSE_TIMEOUT = 2  # connect_timeout of the bounded-close tests
REDSHIFT_CLUSTER = "iampool-connect-contract"
RDS_NAME = "db.cluster-iampool20.us-east-1.rds.amazonaws.com"  # does not resolve here
TOKEN_MARKS = (b"X-Amz-Signature", b"Action=connect", b"X-Amz-Credential")
PG_SSL_REQUEST = 80877103
PG_GSSENC_REQUEST = 80877104
PG_PROTOCOL_3 = 196608
PG_ASK_CLEAR_TEXT_PASSWORD = b"R" + (8).to_bytes(4, "big") + (3).to_bytes(4, "big")


# -- hostile endpoints -----------------------------------------------------------------------

Mode = Literal["silent", "tls-stall", "postgresql"]


class Listener:
    """A loopback TCP server in threads that keeps every byte it receives.

    ``silent``: accepts and never sends a byte. ``tls-stall``: answers a PostgreSQL SSLRequest
    with ``S``, then says nothing. ``postgresql``: a PostgreSQL look-alike that takes TLS
    (after an SSLRequest, or direct) or plain text, asks for a clear-text password after the
    startup message and answers it with an ErrorResponse (SQLSTATE 28P01, ``refusal``).
    ``clear`` holds what arrived before TLS, ``decrypted`` what arrived over it.
    """

    def __init__(self, mode: Mode, *, refusal: str = "password authentication failed") -> None:
        self.mode = mode
        self.refusal = refusal
        self.contacts = 0
        self._contacted = threading.Condition()
        self.clear: list[bytes] = []
        self.decrypted: list[bytes] = []
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.1)
        self.port: int = self._server.getsockname()[1]
        self._accepted: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._tls: ssl.SSLContext | None = None
        self.ca_pem = b""
        if mode == "postgresql":
            authority = trustme.CA()
            self.ca_pem = authority.cert_pem.bytes()  # for clients that verify (Redshift)
            self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            authority.issue_cert(RDS_NAME, "127.0.0.1", "localhost").configure_cert(self._tls)
        self._accepting = threading.Thread(target=self._accept, name="contract-listener")

    def __enter__(self) -> Listener:
        self._accepting.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Hang up on every client (a driver thread stuck reading gets its EOF) and stop."""
        self._stop.set()
        self._accepting.join(5)
        with self._lock:
            accepted = list(self._accepted)
        for connection in accepted:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(5)
        self._server.close()

    def saw_token(self, *, clear_only: bool = False) -> bool:
        with self._lock:
            data = b"".join(self.clear if clear_only else [*self.clear, *self.decrypted])
        return any(mark in data for mark in TOKEN_MARKS)

    def count(self) -> int:
        with self._lock:
            return self.contacts

    def wait_for_contacts(self, count: int, timeout: float) -> bool:
        """Block until ``count`` clients connected (run it in a worker thread)."""
        with self._contacted:
            return self._contacted.wait_for(lambda: self.count() >= count, timeout)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.contacts += 1
                self._accepted.append(connection)
            with self._contacted:
                self._contacted.notify_all()
            thread = threading.Thread(target=self._serve, args=(connection,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, connection: socket.socket) -> None:
        with connection, contextlib.suppress(OSError, ssl.SSLError, ValueError):
            if self.mode == "silent":
                self._drain(connection, self.clear)
            elif self.mode == "tls-stall":
                if self._request(connection) == PG_SSL_REQUEST:
                    connection.sendall(b"S")
                self._drain(connection, self.clear)
            else:
                self._postgresql(connection)

    def _drain(self, stream: socket.socket, into: list[bytes]) -> None:
        while chunk := stream.recv(65536):
            with self._lock:
                into.append(chunk)

    def _read(self, stream: socket.socket, size: int, into: list[bytes]) -> bytes:
        data = receive_exactly(stream, size)
        with self._lock:
            into.append(data)
        return data

    def _request(self, stream: socket.socket) -> int:
        header = self._read(stream, 8, self.clear)
        return int.from_bytes(header[4:8], "big")

    def _postgresql(self, connection: socket.socket) -> None:
        with contextlib.ExitStack() as wrapped:
            self._postgresql_login(connection, wrapped)

    def _wrap(self, connection: socket.socket, wrapped: contextlib.ExitStack) -> ssl.SSLSocket:
        assert self._tls is not None
        return wrapped.enter_context(self._tls.wrap_socket(connection, server_side=True))

    def _postgresql_login(self, connection: socket.socket, wrapped: contextlib.ExitStack) -> None:
        stream, into = connection, self.clear
        first = connection.recv(1, socket.MSG_PEEK)
        if first == b"\x16":  # a TLS ClientHello: direct TLS (sslnegotiation=direct)
            stream, into = self._wrap(connection, wrapped), self.decrypted
        header = self._read(stream, 8, into)
        code = int.from_bytes(header[4:8], "big")
        while code in (PG_SSL_REQUEST, PG_GSSENC_REQUEST):
            if code == PG_GSSENC_REQUEST:
                stream.sendall(b"N")
            else:
                stream.sendall(b"S")
                stream, into = self._wrap(connection, wrapped), self.decrypted
            header = self._read(stream, 8, into)
            code = int.from_bytes(header[4:8], "big")
        self._read(stream, int.from_bytes(header[:4], "big") - 8, into)  # the startup message
        stream.sendall(PG_ASK_CLEAR_TEXT_PASSWORD)
        kind_and_length = self._read(stream, 5, into)
        self._read(stream, int.from_bytes(kind_and_length[1:5], "big") - 4, into)
        fields = b"".join(
            tag + value.encode() + b"\0"
            for tag, value in ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", "28P01"),
                               (b"M", self.refusal))
        ) + b"\0"  # fmt: skip
        stream.sendall(b"E" + (len(fields) + 4).to_bytes(4, "big") + fields)
        self._drain(stream, into)


@pytest.fixture
async def cache() -> AsyncIterator[CredentialCache]:
    cache = CredentialCache()
    yield cache
    await cache.aclose()


@pytest.fixture(scope="module")
def redshift_config(fake_aws: FakeAws) -> AwsIamConfig:
    """A Redshift cluster of the module's own: only GetClusterCredentials is called (the DSNs
    name a host). Not the ``iam_redshift`` fixture: its endpoint override does not survive a
    ``FakeAws.reset()`` of test_fake_aws, which runs after this module."""
    fake_aws.create_redshift_cluster(REDSHIFT_CLUSTER, db_name="dev")
    return AwsIamConfig.from_extra(
        {
            "enabled": True,
            "region": fake_aws.region,
            "role_arn": fake_aws.create_role("iampool-connect-contract"),
            "db_username": "app",
            "cluster_identifier": REDSHIFT_CLUSTER,
            "db_name": "dev",
        }
    )


def config_for(request: pytest.FixtureRequest, driver: str) -> AwsIamConfig:
    """The aws_iam block of a driver's tests: a role (and cluster) in the session's FakeAws."""
    if driver == "redshift":
        redshift: AwsIamConfig = request.getfixturevalue("redshift_config")
        return redshift
    name = "iam_mysql" if driver in ("aiomysql", "asyncmy") else "iam_postgres"
    database: IamDatabase = request.getfixturevalue(name)
    return database.config


def dsn_at(driver: str, port: int, query: str = "", host: str = "127.0.0.1") -> str:
    # Redshift: the database is aws_iam.db_name, the login user comes from its API
    path = "" if driver == "redshift" else "/postgres"
    login = "" if driver == "redshift" else f"{APP}@"
    return f"{SCHEMES[driver]}://{login}{host}:{port}{path}{'?' + query if query else ''}"


async def warm(config: AwsIamConfig, port: int, cache: CredentialCache) -> None:
    """Mint the credentials a login at ``port`` uses before the timed part of a test, so that a
    one-second ``connect_timeout`` is spent on the login itself even when AssumeRole against the
    stand-in is slow on a loaded machine (it still bounds both: see the dialer)."""
    await auth_for(config, host="127.0.0.1", port=port, cache=cache).credentials()


async def close_connection(connection: Any) -> None:
    result = connection.close()
    if result is not None:
        await result
    wait_closed = getattr(connection, "wait_closed", None)
    if wait_closed is not None:
        await wait_closed()


async def connect_and_close(dsn: str, **kwargs: Any) -> None:
    """``iampool.connect``, then close what it opened (where a test expects it to fail)."""
    await close_connection(await iampool.connect(dsn, **kwargs))


async def create_and_close(driver: str, dsn: str, **kwargs: Any) -> None:
    """``iampool.create_pool``, then close it (where a test expects it to fail)."""
    await close_pool(driver, await iampool.create_pool(dsn, **kwargs))


async def close_pool(driver: str, pool: Any) -> None:
    """``close()`` then ``wait_closed()`` for aiomysql's interface, else ``await close()``."""
    if driver in ("aiomysql", "asyncmy"):
        pool.close()
        await pool.wait_closed()
    else:
        await pool.close()


# -- 1. bounded logins -----------------------------------------------------------------------

SPELLINGS: dict[str, tuple[dict[str, Any], str]] = {
    "keyword": ({"connect_timeout": CONNECT_TIMEOUT}, ""),
    "dsn": ({}, f"connect_timeout={CONNECT_TIMEOUT}"),
    "timeout": ({"timeout": CONNECT_TIMEOUT}, ""),  # asyncpg's own spelling
}
LOGIN_CASES = [
    (driver, mode, spelling)
    for driver in SCHEMES
    for mode in (("silent", "tls-stall") if driver in ("asyncpg", "psycopg", "redshift") else
                 ("silent",))
    for spelling in (("keyword", "dsn", "timeout") if driver == "asyncpg" else
                     ("keyword",) if driver == "redshift" else ("keyword", "dsn"))
]  # fmt: skip


def assert_login_timeout(error: BaseException, port: int) -> None:
    message = str(error)
    assert f"127.0.0.1:{port}" in message
    assert "connect_timeout" in message
    assert isinstance(error, iampool.IamPoolError)
    assert isinstance(error, TimeoutError)


@pytest.mark.parametrize(("driver", "mode", "spelling"), LOGIN_CASES)
async def test_connect_to_a_server_that_never_answers_ends_with_login_timeout_error(
    driver: str, mode: Mode, spelling: str, cache: CredentialCache, request: pytest.FixtureRequest
) -> None:
    config = config_for(request, driver)
    kwargs, query = SPELLINGS[spelling]
    with Listener(mode) as listener:
        await warm(config, listener.port, cache)
        with anyio.fail_after(GUARD), pytest.raises(LoginTimeoutError) as caught:
            await connect_and_close(
                dsn_at(driver, listener.port, query), aws_iam=config, cache=cache,
                **kwargs,
            )  # fmt: skip

        assert_login_timeout(caught.value, listener.port)
        assert listener.count() == 1  # a timed-out login is not retried
        assert not listener.saw_token()


@pytest.mark.parametrize("driver", list(SCHEMES))
async def test_create_pool_against_a_server_that_never_answers_ends_with_login_timeout_error(
    driver: str, cache: CredentialCache, request: pytest.FixtureRequest
) -> None:
    config = config_for(request, driver)
    with Listener("silent") as listener:
        with anyio.fail_after(GUARD), pytest.raises(LoginTimeoutError) as caught:
            await create_and_close(
                driver, dsn_at(driver, listener.port), aws_iam=config, cache=cache,
                min_size=1, max_size=1, connect_timeout=CONNECT_TIMEOUT,
            )  # fmt: skip

        assert_login_timeout(caught.value, listener.port)


DEFAULT_CONNECT_TIMEOUT = 30  # seconds, every driver's, when none is given


@pytest.mark.slow
async def test_without_connect_timeout_every_driver_bounds_a_login_at_30_s(
    cache: CredentialCache, request: pytest.FixtureRequest
) -> None:
    # One test for the five drivers, their logins at once: the default is 30 s each.
    configs = {driver: config_for(request, driver) for driver in SCHEMES}
    outcomes: dict[str, BaseException | None] = {}
    with contextlib.ExitStack() as stack:
        listeners = {driver: stack.enter_context(Listener("silent")) for driver in SCHEMES}

        async def attempt(driver: str) -> None:
            dsn = dsn_at(driver, listeners[driver].port)
            outcomes[driver] = None
            try:
                await connect_and_close(dsn, aws_iam=configs[driver], cache=cache)
            except Exception as exc:  # judged below, per driver
                outcomes[driver] = exc

        with anyio.fail_after(DEFAULT_CONNECT_TIMEOUT + 10):
            async with anyio.create_task_group() as logins:
                for driver in SCHEMES:
                    logins.start_soon(attempt, driver)

    for driver, listener in listeners.items():
        error = outcomes[driver]
        assert isinstance(error, LoginTimeoutError), f"{driver}: {error!r}"
        assert_login_timeout(error, listener.port)


# -- 2. bounded close ------------------------------------------------------------------------


def redshift_threads() -> set[threading.Thread]:
    return {
        thread for thread in threading.enumerate() if thread.name.startswith("iampool-redshift-")
    }


async def acquire_one(driver: str, pool: Any) -> None:
    if driver == "psycopg":
        async with pool.connection():
            pass
    else:
        async with pool.acquire():
            pass


@pytest.mark.parametrize(
    "driver",
    list(SCHEMES),
)
async def test_close_returns_with_logins_stuck_and_acquires_cancelled(
    driver: str, cache: CredentialCache, request: pytest.FixtureRequest
) -> None:
    config = config_for(request, driver)
    before = redshift_threads()
    with Listener("silent") as listener:
        pool = await iampool.create_pool(
            dsn_at(driver, listener.port), aws_iam=config, cache=cache,
            min_size=0, max_size=2, connect_timeout=CLOSE_TIMEOUT,
        )  # fmt: skip
        with anyio.fail_after(GUARD):
            async with anyio.create_task_group() as acquiring:
                for _ in range(2):
                    acquiring.start_soon(acquire_one, driver, pool)
                # a login is under way (psycopg_pool grows one connection at a time)
                assert await anyio.to_thread.run_sync(listener.wait_for_contacts, 1, GUARD)
                # Past the TCP connect: asyncpg cancelled inside loop.create_connection() leaves
                # its TLS-upgrade future failed and unretrieved (asyncpg's race, not iampool's;
                # a bare asyncpg pool does the same), which this test would report.
                await anyio.sleep(0.2)
                acquiring.cancel_scope.cancel()

        deadline = time.monotonic() + CLOSE_TIMEOUT + 10
        with anyio.fail_after(CLOSE_TIMEOUT + 10):
            await close_pool(driver, pool)
        for thread in redshift_threads() - before:  # they end once their login timed out
            await anyio.to_thread.run_sync(thread.join, max(0.0, deadline - time.monotonic()))

        assert not redshift_threads() - before
        assert not listener.saw_token()


# -- 3. the environment cannot move a token --------------------------------------------------

LIBPQ_DRIVERS = ["asyncpg", "psycopg"]


def hostile_service_file(directory: Path, port: int) -> Path:
    service_file = directory / "pg_service.conf"
    service_file.write_text(
        f"[hostile]\nhost=127.0.0.1\nhostaddr=127.0.0.1\nport={port}\nsslmode=disable\n"
        f"sslkeylogfile={directory / 'service-keys.log'}\n"
    )
    return service_file


def redirections(listener: Listener, directory: Path) -> dict[str, dict[str, str]]:
    """Variables that each try to send the login (and its token) to the recording listener."""
    return {
        "PGHOSTADDR": {"PGHOSTADDR": "127.0.0.1"},
        "PGHOST+PGPORT": {"PGHOST": "127.0.0.1", "PGPORT": str(listener.port)},
        "PGSERVICE": {
            "PGSERVICE": "hostile",
            "PGSERVICEFILE": str(hostile_service_file(directory, listener.port)),
        },
    }


@pytest.mark.parametrize(
    ("driver", "variables"),
    [
        ("psycopg", "PGHOSTADDR"),
        ("psycopg", "PGHOST+PGPORT"),
        ("psycopg", "PGSERVICE"),
        ("asyncpg", "PGHOSTADDR"),
        ("asyncpg", "PGHOST+PGPORT"),
        ("asyncpg", "PGSERVICE"),
    ],
)  # fmt: skip
async def test_libpq_variables_cannot_send_a_token_to_another_address(
    driver: str,
    variables: str,
    cache: CredentialCache,
    iam_postgres: IamDatabase,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    with Listener("postgresql") as listener:
        for name, value in redirections(listener, tmp_path)[variables].items():
            monkeypatch.setenv(name, value)
        # The DSN names an endpoint that does not resolve here, at the listener's port: only
        # the environment could make a driver dial the listener.
        dsn = dsn_at(driver, listener.port, host=RDS_NAME)

        # It fails (no such host, or the listener's refusal); only where the token went counts.
        with anyio.fail_after(GUARD), contextlib.suppress(Exception):
            await connect_and_close(dsn, aws_iam=iam_postgres.config, cache=cache)

        assert not listener.saw_token(), f"{variables} sent a token to the recording listener"


def every_libpq_variable(directory: Path, listener: Listener) -> dict[str, str]:
    """Each environment variable libpq reads (its own list), set to a hostile value."""
    from psycopg import pq

    passfile = directory / "pgpass"
    passfile.write_text("*:*:*:*:hostile-password\n")
    passfile.chmod(0o600)
    hostile = {
        "service": "hostile",
        "user": "hostile_user",
        "password": "hostile-password",
        "passfile": str(passfile),
        "channel_binding": "require",
        "connect_timeout": "1",
        "dbname": "hostile_db",
        "host": "127.0.0.2",
        "hostaddr": "127.0.0.2",
        "port": str(listener.port),
        "client_encoding": "LATIN1",
        "options": "-c search_path=hostile_env",
        "application_name": "hostile-app",
        "sslmode": "disable",
        "sslnegotiation": "direct",
        "sslcompression": "1",
        "sslcert": str(directory / "hostile.crt"),
        "sslkey": str(directory / "hostile.key"),
        "sslcertmode": "require",
        "sslrootcert": str(directory / "hostile-ca.pem"),
        "sslcrl": str(directory / "hostile.crl"),
        "sslcrldir": str(directory),
        "sslsni": "0",
        "requirepeer": "hostile",
        "require_auth": "scram-sha-256",
        "min_protocol_version": "3.2",
        "max_protocol_version": "3.2",
        "ssl_min_protocol_version": "TLSv1",
        "ssl_max_protocol_version": "TLSv1.1",
        "gssencmode": "require",
        "krbsrvname": "hostile",
        "gsslib": "gssapi",
        "gssdelegation": "1",
        "target_session_attrs": "read-only",
        "load_balance_hosts": "random",
    }
    variables = {}
    for option in pq.Conninfo.get_defaults():
        if option.envvar:
            keyword, envvar = option.keyword.decode(), option.envvar.decode()
            variables[envvar] = hostile.get(keyword, "hostile")
    variables["PGSERVICEFILE"] = str(hostile_service_file(directory, listener.port))
    return variables


@pytest.mark.parametrize("driver", LIBPQ_DRIVERS)
async def test_a_login_through_the_gateway_ignores_every_libpq_variable(
    driver: str,
    cache: CredentialCache,
    iam_postgres: IamDatabase,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    _, _, rest = iam_postgres.dsn.partition("://")
    dsn = f"{SCHEMES[driver]}://{rest}"
    with Listener("postgresql") as listener:
        for name, value in every_libpq_variable(tmp_path, listener).items():
            monkeypatch.setenv(name, value)

        with anyio.fail_after(GUARD):
            connection = await iampool.connect(dsn, aws_iam=iam_postgres.config, cache=cache)
            try:
                if driver == "asyncpg":
                    user = await connection.fetchval("SELECT current_user")
                else:
                    cursor = await connection.execute("SELECT current_user")
                    (user,) = await cursor.fetchone()
            finally:
                await connection.close()

        assert user == iam_postgres.user
        assert listener.count() == 0


@pytest.mark.parametrize(
    ("driver", "variable"),
    [
        ("asyncpg", "SSLKEYLOGFILE"),
        ("psycopg", "SSLKEYLOGFILE"),
        ("asyncpg", "PGSSLKEYLOGFILE"),
        ("psycopg", "PGSSLKEYLOGFILE"),
        ("asyncpg", "PGSERVICE"),
        ("psycopg", "PGSERVICE"),
    ],
)  # fmt: skip
async def test_no_tls_key_log_is_written_whatever_the_environment_says(
    driver: str,
    variable: str,
    cache: CredentialCache,
    iam_postgres: IamDatabase,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    key_log = tmp_path / "keys.log"
    if variable == "PGSERVICE":
        service_file = tmp_path / "pg_service.conf"
        service_file.write_text(f"[keys]\nsslkeylogfile={key_log}\n")
        monkeypatch.setenv("PGSERVICEFILE", str(service_file))
        monkeypatch.setenv("PGSERVICE", "keys")
    else:
        monkeypatch.setenv(variable, str(key_log))
    _, _, rest = iam_postgres.dsn.partition("://")

    with anyio.fail_after(GUARD):
        connection = await iampool.connect(
            f"{SCHEMES[driver]}://{rest}", aws_iam=iam_postgres.config, cache=cache
        )
        await connection.close()

    # No session secrets of the database connection (Python writes a one-line header when a
    # library builds a default context while the variable is set: the AWS SDK's HTTP client,
    # whose HTTPS to AWS honours SSLKEYLOGFILE as botocore does; iampool's contexts do not).
    lines = key_log.read_text().splitlines() if key_log.exists() else []
    assert [line for line in lines if line and not line.startswith("#")] == []


# -- 4. error text ---------------------------------------------------------------------------

FORGED = 'password authentication failed for user "app" bad\nFORGED iampool WARNING line\x1b[31m'


def assert_escaped(text: str) -> None:
    assert "\x1b" not in text
    assert "\nFORGED" not in text
    assert "FORGED iampool WARNING line" in text  # the server's text is shown, escaped
    assert re.search(r"\\(x1b|033|u001b|e)", text), text


@pytest.mark.parametrize("driver", [*LIBPQ_DRIVERS, "redshift"])
async def test_a_refusal_with_control_characters_is_escaped_in_logs_and_errors(
    driver: str,
    cache: CredentialCache,
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    config = config_for(request, driver)
    with Listener("postgresql", refusal=FORGED) as listener:
        if driver == "redshift":  # redshift-connector verifies the CA (verify-ca) from the store
            ca_file = tmp_path / "listener-ca.pem"
            ca_file.write_bytes(listener.ca_pem)
            monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
        with anyio.fail_after(GUARD), pytest.raises(AuthTokenRejected) as caught:
            await connect_and_close(dsn_at(driver, listener.port), aws_iam=config, cache=cache)

    records = [
        record.getMessage() for record in caplog.records if record.name.startswith("iampool")
    ]
    warnings = [text for text in records if "FORGED" in text or "refused" in text]
    assert warnings  # the retry warning
    for text in records:
        assert "\x1b" not in text
        assert "\nFORGED" not in text
    for text in warnings:
        assert_escaped(text)
    assert_escaped(str(caught.value))


def test_the_listener_records_a_login_it_is_sent() -> None:
    """The recording listener itself: a client that logs in over TLS is recorded."""
    with Listener("postgresql") as listener:
        raw = socket.create_connection(("127.0.0.1", listener.port), timeout=5)
        with raw:
            raw.sendall((8).to_bytes(4, "big") + PG_SSL_REQUEST.to_bytes(4, "big"))
            assert raw.recv(1) == b"S"
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            with context.wrap_socket(raw) as tls:
                startup = PG_PROTOCOL_3.to_bytes(4, "big") + b"user\0app\0\0"
                tls.sendall((len(startup) + 4).to_bytes(4, "big") + startup)
                assert tls.recv(9) == PG_ASK_CLEAR_TEXT_PASSWORD
                password = b"X-Amz-Signature=00\0"
                tls.sendall(b"p" + (len(password) + 4).to_bytes(4, "big") + password)
                assert tls.recv(1) == b"E"

    assert listener.saw_token()
    assert not listener.saw_token(clear_only=True)
    assert listener.count() == 1
